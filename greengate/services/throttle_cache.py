"""What one process keeps of the shared throttle counters between its database round trips.

Entries are keyed by (scope, subject, window start) and held in a bounded map: past its capacity, the
entries of windows that have ended go first, then the least recently used. An entry still holding
hits not yet written to the database is never evicted; they are written within a flush interval and
the entry becomes evictable again.

Freshness is measured on the process's monotonic clock, not on the `now` a caller passes in: a test
or a replay drill may hold `now` still, and a cached total must still age."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

Key = tuple[str, str, int]  # scope, subject, window start (epoch seconds)
NEVER = -math.inf


class Windowed(Protocol):
    ends: int  # epoch second the entry's window ends

    def evictable(self) -> bool: ...


@dataclass
class FailureTotal:
    """A window's failures as the database last told this process (the largest total it heard)."""

    ends: int
    total: int = 0
    read_at: float = NEVER  # monotonic seconds of the read or write that told it

    def evictable(self) -> bool:
        return True


@dataclass
class RequestCount:
    """A window's requests: the database's total as last returned to this process, plus this
    process's own hits that the database has not confirmed yet."""

    ends: int
    limit: int
    seen: int = 0  # the largest window total a write of this process returned
    in_flight: int = 0  # hits in writes issued and not yet answered
    pending: int = 0  # hits counted here and not written yet
    written_at: float = NEVER  # monotonic seconds the last write was issued

    @property
    def unconfirmed(self) -> int:
        return self.in_flight + self.pending

    def evictable(self) -> bool:
        return self.in_flight == 0 and self.pending == 0


E = TypeVar("E", bound=Windowed)


class Windows(Generic[E]):
    """A map of entries by (scope, subject, window start) holding at most about `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Key, E] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> E | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def add(self, key: Key, entry: E, now: int) -> E:
        self._entries[key] = entry
        if len(self._entries) > self.capacity:
            self._trim(now, key)
        return entry

    def entries(self) -> list[tuple[Key, E]]:
        return list(self._entries.items())

    def forget(self, scope: str, prefix: str) -> None:
        for key in [k for k in self._entries if k[0] == scope and k[1].startswith(prefix)]:
            del self._entries[key]

    def _trim(self, now: int, added: Key) -> None:
        # Down to nine tenths of the capacity, so a stream of new subjects trims once per tenth of it.
        # The entry just added stays: its caller is about to count in it.
        target = self.capacity * 9 // 10
        for key, entry in list(self._entries.items()):
            if entry.ends <= now and entry.evictable() and key != added:
                del self._entries[key]
        for key, entry in list(self._entries.items()):  # least recently used first
            if len(self._entries) <= target:
                break
            if entry.evictable() and key != added:
                del self._entries[key]


@dataclass
class ThrottleCache:
    """One process's view of the counters of one database."""

    capacity: int = 10_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: Windows[FailureTotal] = field(init=False)
    requests: Windows[RequestCount] = field(init=False)

    def __post_init__(self) -> None:
        self.failures = Windows(self.capacity)
        self.requests = Windows(self.capacity)
