"""core/drain.py with a fake clock: when a drain ends, who is told, who is out and when back."""

from __future__ import annotations

import pytest

from tidegate.core.drain import Drain, DrainPhase, DrainSettings, Ejections, RecentConsumers


def test_drain_waits_for_in_flight_then_the_settle_time() -> None:
    drain = Drain(DrainSettings(timeout_s=20, settle_s=1))
    assert drain.begin(100.0)
    assert drain.observe(3, 100.2) == DrainPhase.DRAINING
    assert drain.observe(0, 100.5) == DrainPhase.DRAINING  # settling: requests may still be on the wire
    assert drain.observe(1, 101.0) == DrainPhase.DRAINING
    assert drain.observe(0, 101.2) == DrainPhase.DRAINED
    assert drain.progress(150.0)["elapsed_s"] == pytest.approx(1.2)
    assert drain.observe(5, 102.0) == DrainPhase.DRAINED  # over is over


def test_drain_times_out_with_requests_still_in_flight() -> None:
    drain = Drain(DrainSettings(timeout_s=20, settle_s=1))
    drain.begin(0.0)
    assert drain.observe(2, 19.99) == DrainPhase.DRAINING
    assert drain.observe(2, 20.0) == DrainPhase.TIMED_OUT
    assert drain.phase.finished
    progress = drain.progress(25.0)
    assert progress == {"phase": "TIMED_OUT", "in_flight": 2, "elapsed_s": 20.0, "timeout_s": 20, "remaining_s": 0.0}


def test_drain_cancel_only_while_draining_and_begin_again() -> None:
    drain = Drain(DrainSettings(timeout_s=5, settle_s=0))
    assert not drain.cancel(0.0)
    drain.begin(0.0)
    assert not drain.begin(0.5)  # not restarted
    assert drain.cancel(1.0) and drain.phase == DrainPhase.CANCELLED
    assert drain.begin(2.0) and drain.started_at == 2.0
    assert drain.observe(0, 2.0) == DrainPhase.DRAINED
    assert not drain.cancel(3.0) and not drain.begin(3.0)


def test_drain_next_check_never_passes_the_deadline() -> None:
    drain = Drain(DrainSettings(timeout_s=2, settle_s=0))
    drain.begin(10.0)
    assert drain.next_check_in(10.0, 0.05) == 0.05
    assert drain.next_check_in(11.98, 0.05) == pytest.approx(0.02)
    assert drain.next_check_in(13.0, 0.05) == 0.0
    assert drain.progress(11.0)["remaining_s"] == 1.0


@pytest.mark.parametrize("timeout, settle", [(0, 0), (-1, 0), (5, 6), (5, -0.1)])
def test_drain_settings_refuse_nonsense(timeout: float, settle: float) -> None:
    with pytest.raises(ValueError, match="drain"):
        DrainSettings(timeout_s=timeout, settle_s=settle)


def test_recent_consumers_bounded_lru_with_ttl() -> None:
    recent = RecentConsumers(capacity=2, ttl_s=10, refresh_s=1)
    recent.seen("a", "127.0.0.1:1", 0.0)
    recent.seen("b", "127.0.0.1:2", 1.0)
    recent.seen("a", "127.0.0.1:1", 2.0)  # a is now the most recent
    recent.seen("c", "127.0.0.1:3", 3.0)  # evicts b, the least recently seen
    assert recent.current(3.0) == [("c", "127.0.0.1:3", 3.0), ("a", "127.0.0.1:1", 2.0)]
    assert recent.current(12.5) == [("c", "127.0.0.1:3", 3.0)]  # a's ttl is over
    assert recent.current(13.0) == []


def test_recent_consumers_refresh_skips_and_merge_keeps_latest() -> None:
    recent = RecentConsumers(capacity=4, ttl_s=10, refresh_s=1)
    recent.seen("a", "h:1", 0.0)
    changes = recent.changes
    recent.seen("a", "h:1", 0.5)  # within refresh: not touched
    assert recent.changes == changes and recent.current(0.5) == [("a", "h:1", 0.0)]
    recent.merge([("a", "h:1", 4.0), ("b", "h:2", 3.0), ("a", "h:1", 2.0)])
    assert recent.current(5.0) == [("a", "h:1", 4.0), ("b", "h:2", 3.0)]


def test_ejection_backoff_doubles_while_failing_and_resets_on_success() -> None:
    out = Ejections(base_s=1, max_s=3)
    assert out.eject("x", 0.0) and not out.eject("x", 0.1)
    assert out.is_out("x") and out.due(0.99) == []
    assert out.due(1.0) == ["x"] and not out.is_out("x")
    assert out.eject("x", 1.5)  # the re-check failed: twice as long
    assert out.due(3.4) == [] and out.due(3.5) == ["x"]
    out.eject("x", 4.0)  # capped at max_s
    assert out.due(6.9) == [] and out.due(7.0) == ["x"]
    out.succeeded("x")
    out.eject("x", 10.0)
    assert out.due(11.0) == ["x"]  # history forgotten: base backoff again


def test_ejection_next_due_tracks_the_earliest() -> None:
    out = Ejections(base_s=2, max_s=8)
    out.eject("a", 0.0)
    out.eject("b", 1.0)
    assert out.next_due == 2.0
    assert out.due(2.0) == ["a"] and out.next_due == 3.0
    out.forget("b")
    assert out.next_due == float("inf") and not out.is_out("b")
