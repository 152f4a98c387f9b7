"""A rule that can never match anything tidegate governs is written, and reported: in the answer and as an event."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tidegate.control.plane import ControlPlane
from tidegate.control.storage import SqliteStorage

FT = "fault-tolerance.opensergo.io/v1alpha1"


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock):
    storage = SqliteStorage(tmp_path)
    yield ControlPlane(storage, clock=clock, wall_clock=lambda: 1_700_000_000.0)
    storage.close()


def _rule(target: str, app: str = "orders") -> dict:
    return {
        "apiVersion": FT,
        "kind": "FaultToleranceRule",
        "metadata": {"name": "r"},
        "spec": {
            "selector": {"app": app},
            "targets": [{"targetResourceName": target}],
            "strategies": [{"kind": "ConcurrencyLimitStrategy", "spec": {"maxConcurrency": 1}}],
        },
    }


def test_an_inert_target_is_written_with_a_warning_and_an_event(plane: ControlPlane) -> None:
    plane.register({"service": "orders", "host": "h", "port": 1})
    [answer] = plane.apply_rules([_rule("http://inventory/stock")])
    assert answer["revision"] > 0 and len(answer["warnings"]) == 1 and "'http://inventory'" in answer["warnings"][0]
    [event] = [e for e in plane.recent_events() if e["type"] == "rule-warning"]
    assert event["document"] == "FaultToleranceRule/r" and event["warnings"] == answer["warnings"]
    [fixed] = plane.apply_rules([_rule("http://inventory")])
    assert "warnings" not in fixed


def test_a_scope_naming_no_registered_service_is_warned_about(plane: ControlPlane) -> None:
    plane.register({"service": "orders", "host": "h", "port": 1})
    [answer] = plane.apply_rules([_rule("GET /x", app="ordres")])
    assert "'ordres'" in answer["warnings"][0]
    [answer] = plane.apply_rules([_rule("GET /x", app="orders")])
    assert "warnings" not in answer
