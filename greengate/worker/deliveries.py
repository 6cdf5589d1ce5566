"""The deliveries one worker has under way: each its own task, at most so many at once in total, per
target (scheme, host and port) and per merchant, so that one slow or dead endpoint only ever holds
its own share and every other target's callbacks go out beside it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import structlog

from greengate.services.outbox import ClaimedMessage

log = structlog.get_logger(__name__)


def target_of(url: str | None) -> str:
    """The endpoint a URL reaches: its scheme, host and port ("" when it has none)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port or ''}"


class Deliveries:
    def __init__(self, *, total: int, per_target: int, per_merchant: int) -> None:
        self.total = total
        self.per_target = per_target
        self.per_merchant = per_merchant
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._messages: dict[int, ClaimedMessage] = {}
        self._targets: Counter[str] = Counter()
        self._merchants: Counter[int] = Counter()
        self._aggregates: set[str] = set()
        self._changed = asyncio.Event()

    def room(self) -> int:
        return self.total - len(self._tasks)

    def held(self) -> list[int]:
        return sorted(self._tasks)

    def busy(self) -> tuple[frozenset[int], frozenset[str]]:
        """The merchants and the exact URLs whose share is taken: a claim leaves their rows alone."""
        merchants = frozenset(m for m, n in self._merchants.items() if n >= self.per_merchant)
        full = {t for t, n in self._targets.items() if n >= self.per_target}
        urls = frozenset(
            m.target_url for m in self._messages.values() if m.target_url and target_of(m.target_url) in full
        )
        return merchants, urls

    def start(self, message: ClaimedMessage, run: Callable[[ClaimedMessage], Awaitable[None]]) -> bool:
        """Start delivering `message` unless its target's or merchant's share (or the total) is taken."""
        target = target_of(message.target_url)
        merchant = message.merchant_id if message.merchant_id is not None else -1
        if (
            message.aggregate in self._aggregates  # callbacks about one object go out in order
            or len(self._tasks) >= self.total
            or self._targets[target] >= self.per_target
            or self._merchants[merchant] >= self.per_merchant
        ):
            return False
        self._targets[target] += 1
        self._merchants[merchant] += 1
        self._messages[message.id] = message
        self._aggregates.add(message.aggregate)

        async def deliver() -> None:
            try:
                await run(message)
            finally:
                self._targets[target] -= 1
                self._merchants[merchant] -= 1
                self._targets += Counter()  # drop the zeros
                self._merchants += Counter()
                del self._tasks[message.id]
                del self._messages[message.id]
                self._aggregates.discard(message.aggregate)
                self._changed.set()

        self._tasks[message.id] = asyncio.create_task(deliver(), name=f"outbox-{message.id}")
        return True

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def wait_change(self, stop: asyncio.Event, *, seconds: float) -> None:
        """Sleep until a delivery ends, `stop` is set or `seconds` pass."""
        self._changed.clear()
        waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
