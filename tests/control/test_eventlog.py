"""The resume-or-snapshot decision of the change log."""

from __future__ import annotations

import json

import pytest

from tidegate.control.eventlog import EventLog


def _log(floor: int, revisions: list[int], capacity: int = 100) -> EventLog:
    log = EventLog(floor=floor, capacity=capacity)
    for revision in revisions:
        log.append(revision, "rule", {"revision": revision})
    return log


def test_a_watcher_at_the_head_resumes_with_nothing_to_replay() -> None:
    log = _log(10, [11, 12, 13])
    assert log.since(13) == []


def test_a_watcher_behind_gets_exactly_the_changes_after_its_revision() -> None:
    log = _log(10, [11, 12, 13])
    assert [c.revision for c in log.since(11) or []] == [12, 13]
    assert [c.revision for c in log.since(10) or []] == [11, 12, 13]


def test_revision_gaps_are_fine_when_the_log_covers_them() -> None:
    log = _log(10, [12, 15])
    assert [c.revision for c in log.since(13) or []] == [15]


def test_a_watcher_from_before_the_floor_needs_a_snapshot() -> None:
    log = _log(10, [11, 12])
    assert log.since(9) is None
    assert log.since(0) is None


def test_a_watcher_ahead_of_the_head_needs_a_snapshot() -> None:
    """It saw revisions this server never had (its data was replaced)."""
    log = _log(10, [11])
    assert log.since(12) is None


def test_trimming_raises_the_floor_to_the_last_dropped_change() -> None:
    log = _log(0, [1, 2, 3, 4, 5], capacity=3)
    assert log.floor == 2
    assert log.since(1) is None
    assert [c.revision for c in log.since(2) or []] == [3, 4, 5]


def test_advance_forces_a_snapshot_on_everyone_behind() -> None:
    log = _log(0, [1, 2])
    log.advance(5)
    assert log.since(2) is None
    assert log.since(5) == []


def test_frames_are_encoded_once_as_server_sent_events() -> None:
    log = EventLog(floor=0)
    change = log.append(7, "instance", {"revision": 7, "op": "put"})
    text = change.frame.decode()
    assert text.startswith("event: instance\nid: 7\ndata: ")
    assert text.endswith("\n\n")
    assert json.loads(text.split("data: ", 1)[1]) == {"revision": 7, "op": "put"}


def test_revisions_must_increase() -> None:
    log = _log(0, [3])
    with pytest.raises(ValueError):
        log.append(3, "rule", {})
