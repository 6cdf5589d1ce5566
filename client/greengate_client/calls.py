"""One mechanism for sync and async calls.

An API operation is written once, as a generator that yields steps (`Send` a request, `Sleep` a while)
and returns its result. A driver runs the steps: `SyncDriver` with `httpx.Client` and `time.sleep`,
`AsyncDriver` with `httpx.AsyncClient` and `asyncio.sleep`. A network failure is thrown back into the
generator, so retry policy lives in the operation, not in the drivers.

Operations are declared with `@operation` on a class shared by both clients; the descriptor hands out a
plain function on a sync client and a coroutine function on an async one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """An HTTP request; the driver sends back the `httpx.Response` or throws `httpx.TransportError`."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Flow = Generator[Step, Any, T]


class SyncDriver:
    """Runs flows with a blocking `httpx.Client`."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                reply = self.http.request(step.method, step.path, headers=step.headers, content=step.content)
            except httpx.TransportError as exc:
                error = exc


class AsyncDriver:
    """Runs the same flows with an `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, flow: Flow[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                reply = await self.http.request(
                    step.method, step.path, headers=step.headers, content=step.content
                )
            except httpx.TransportError as exc:
                error = exc


class SyncClientBase:
    _driver: SyncDriver


class AsyncClientBase:
    _driver: AsyncDriver


class operation(Generic[P, T]):
    """Turns a flow method into a blocking call on sync clients and an awaitable one on async clients."""

    def __init__(self, flow: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self.flow = flow
        self.__doc__ = flow.__doc__
        self.__name__ = flow.__name__

    @overload
    def __get__(self, obj: SyncClientBase, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: AsyncClientBase, owner: type | None = None) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> operation[P, T]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        flow = self.flow
        if isinstance(obj, AsyncClientBase):

            async def call_async(*args: Any, **kwargs: Any) -> T:
                return await obj._driver.run(flow(obj, *args, **kwargs))

            call_async.__doc__ = flow.__doc__
            return call_async

        def call(*args: Any, **kwargs: Any) -> T:
            return obj._driver.run(flow(obj, *args, **kwargs))  # type: ignore[no-any-return]

        call.__doc__ = flow.__doc__
        return call
