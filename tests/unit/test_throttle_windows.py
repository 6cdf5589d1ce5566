"""The bounded map a process keeps throttle counters in."""

from __future__ import annotations

from greengate.services.throttle_cache import FailureTotal, RequestCount, Windows

NOW = 1_000_000


def test_the_map_stays_within_its_capacity_for_a_stream_of_subjects() -> None:
    windows: Windows[FailureTotal] = Windows(100)
    for n in range(10_000):
        windows.add(("auth_fail_exchange", f"198.51.100.{n}", NOW), FailureTotal(NOW + 300), NOW)
    assert len(windows) <= 100


def test_ended_windows_go_before_recently_used_live_ones() -> None:
    windows: Windows[FailureTotal] = Windows(10)
    for n in range(5):
        windows.add(("s", f"live{n}", NOW), FailureTotal(NOW + 300), NOW)
    for n in range(6):
        windows.add(("s", f"ended{n}", NOW - 600), FailureTotal(NOW - 300), NOW)
    kept = {key[1] for key, _ in windows.entries()}
    assert {f"live{n}" for n in range(5)} <= kept
    assert len(windows) <= 9


def test_least_recently_used_live_windows_go_first() -> None:
    windows: Windows[FailureTotal] = Windows(10)
    for n in range(10):
        windows.add(("s", f"a{n}", NOW), FailureTotal(NOW + 300), NOW)
    windows.get(("s", "a0", NOW))
    windows.add(("s", "new", NOW), FailureTotal(NOW + 300), NOW)
    kept = {key[1] for key, _ in windows.entries()}
    assert {"a0", "new"} <= kept
    assert "a1" not in kept


def test_counts_not_yet_written_are_never_evicted() -> None:
    windows: Windows[RequestCount] = Windows(10)
    for n in range(10):
        windows.add(("c", str(n), NOW - 120), RequestCount(NOW - 60, 600, pending=3), NOW)
    for n in range(10):
        windows.add(("c", f"quiet{n}", NOW), RequestCount(NOW + 60, 600), NOW)
    kept = {key[1] for key, _ in windows.entries()}
    assert {str(n) for n in range(10)} <= kept
