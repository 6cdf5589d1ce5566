"""Local HTTP servers in background threads: callback receivers and fake upstreams.

Each server records every request it gets and answers through a `respond` function, which a test may
swap at any time (e.g. to make an upstream start failing).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(data).encode())


Responder = Callable[[Recorded], Reply]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1; `url` is its base URL."""

    def __init__(self, respond: Responder | None = None, port: int = 0) -> None:
        self.respond: Responder = respond or (lambda _: Reply(200, b'{"ok": true}'))
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with server._lock:
                    server.requests.append(recorded)
                    respond = server.respond
                try:
                    reply = respond(recorded)
                except Exception as exc:  # a broken test responder must not hang the client
                    reply = Reply(599, repr(exc).encode(), "text/plain")
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def received(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[list[Recorded]], bool], timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.received()
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; {len(seen)} requests received")
            time.sleep(0.05)


@dataclass
class Receiver:
    """A callback receiver: answers each request with the next scripted status, then `default`."""

    default: int = 200
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    server: LocalServer = field(init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server = LocalServer(self._respond)

    def _respond(self, _: Recorded) -> Reply:
        with self._lock:
            status = self.script.pop(0) if self.script else self.default
        return Reply(status, b"{}" if status < 300 else b'{"error": "try later"}', delay=self.delay)

    def answer(self, status: int) -> None:
        with self._lock:
            self.script.clear()
            self.default = status

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/greengate"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.received()

    def __enter__(self) -> Receiver:
        self.server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop()


def callback_events(requests: list[Recorded]) -> Iterator[tuple[str, str]]:
    """(order_id, order_status) of each received exchange callback, in arrival order."""
    for r in requests:
        data = r.json()["data"]
        yield data["order_id"], data["order_status"]
