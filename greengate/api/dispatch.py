"""One lean dispatch for the scripts of both APIs: request bytes in, response bytes out.

The Exchange API's order endpoints and every Merchant API script are served here, before the
framework's middleware, routing, dependency solving and request objects, which would cost as much
as a script's own work. A script is a coroutine from an `Incoming` (method, path, query, headers and
the whole body, read under the body limit before any transaction opens) to an `Answer`. Everything
the table does not hold (pages, the console, the Exchange API's other routes, the documentation)
goes to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from greengate.runtime import Runtime


@dataclass(slots=True)
class Incoming:
    """One HTTP request with its body in. Header names are lower case, as ASGI gives them."""

    method: str
    path: str
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes
    client: str
    path_params: dict[str, str] = field(default_factory=dict)

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


Script = Callable[["Runtime", Incoming], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Route:
    """A script and the path template it is reported under in the access metrics (`scope["route"]`
    holds it, as the framework's routes do)."""

    path: str
    methods: frozenset[str]
    script: Script


class Scripts:
    """The table: exact paths, and paths with one variable segment, the merchant's id
    (`/v1/merchant/{merchant_id}/...`)."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._templated: dict[tuple[str, str], Route] = {}

    def add(self, path: str, methods: Iterable[str], script: Script) -> None:
        methods = frozenset(methods)
        if "{" in path:
            prefix, rest = path.split("{", 1)
            name, suffix = rest.split("}", 1)
            assert name == "merchant_id", "one templated segment: the merchant id"
            self._templated[(prefix, suffix)] = Route(path, methods, script)
        else:
            self._exact[path] = Route(path, methods, script)

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for (prefix, suffix), route in self._templated.items():
            if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
                value = path[len(prefix) : len(path) - len(suffix)]
                if "/" not in value:  # the script tells a malformed id from an unknown one
                    return route, {"merchant_id": value}
        return None


def client_address(scope: Scope) -> str:
    """The address the request came from, as the server saw it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None when the client left (or the body limit cut it off and answered 413)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_answer(send: Send, answer: Answer) -> None:
    headers = [
        (b"content-type", answer.content_type),
        (b"content-length", b"%d" % len(answer.body)),
        *answer.headers,
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


class Dispatch:
    """ASGI: a request for a script in `scripts` is served here, anything else by `fallback`. The access
    metrics and request id come from the middleware around it, which reads `scope["route"]`."""

    def __init__(self, scripts: Scripts, fallback: ASGIApp, runtime: Callable[[], Runtime]) -> None:
        self.scripts = scripts
        self.fallback = fallback
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.scripts.match(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] not in found[0].methods:
            await self.fallback(scope, receive, send)
            return
        route, path_params = found
        scope["route"] = route
        rt = self.runtime()
        body = await read_body(receive, rt.settings.max_request_bytes)
        if body is None:
            return  # the client is gone, or already has its 413
        incoming = Incoming(
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            dict(scope["headers"]),
            body,
            client_address(scope),
            path_params,
        )
        await send_answer(send, await route.script(rt, incoming))


async def incoming_of(request: Request) -> Incoming:
    """A framework request as a script sees one (for the answers the framework's routes give in a
    script's format)."""
    return Incoming(
        request.method,
        request.url.path,
        request.scope.get("query_string", b""),
        dict(request.scope["headers"]),
        await request.body(),
        client_address(request.scope),
    )
