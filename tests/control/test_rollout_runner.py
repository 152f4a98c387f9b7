"""The rollout runner in process, on a fake clock: one rollout's trouble is no other's, and big evidence still makes an event."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.clock import FakeClock
from tidegate.control.metrics_store import BUCKETS, MetricsStore
from tidegate.control.plane import ControlPlane
from tidegate.control.rollouts import RolloutRunner
from tidegate.control.storage import SqliteStorage, StorageError

HISTOGRAM = [0] * (len(BUCKETS) + 1)


class FlakyStorage(SqliteStorage):
    """SQLite that cannot save the rollouts of the services in `broken`."""

    broken: set[str] = set()

    def put_rollout(self, service: str, record: Mapping[str, Any] | None) -> None:
        if service in self.broken:
            raise StorageError(f"cannot save {service}")
        super().put_rollout(service, record)


def setup(tmp_path: Path, services: tuple[str, ...]) -> tuple[RolloutRunner, MetricsStore, FakeClock, FlakyStorage]:
    clock = FakeClock(1_000_000.0)
    storage = FlakyStorage(tmp_path)
    plane = ControlPlane(storage, wall_clock=clock)
    metrics = MetricsStore()
    runner = RolloutRunner(plane, metrics, clock=clock)
    for port, service in enumerate(services, start=9000):
        for tag in ("", "v2"):
            plane.register({"service": service, "host": "127.0.0.1", "port": port + (100 if tag else 0), "tag": tag})
        runner.start({"metadata": {"name": service}, "spec": {"service": service, "tag": "v2", "steps": [50, 100], "interval": "10s"}})
    return runner, metrics, clock, storage


def served(metrics: MetricsStore, service: str, now: float, resources: int = 1) -> None:
    rows = [["in", f"GET /r{i}", 100, {}, 0, 100, 0.1, [100, *HISTOGRAM[1:]]] for i in range(resources)]
    for tag in ("", "v2"):
        metrics.ingest({"rows": rows}, service, tag, now)


def test_a_rollout_whose_store_fails_does_not_hold_up_the_others(tmp_path: Path) -> None:
    runner, metrics, clock, storage = setup(tmp_path, ("alpha", "beta"))
    for _ in range(10):
        served(metrics, "alpha", clock())
        served(metrics, "beta", clock())
        clock.advance(1.0)
    clock.advance(0.5)
    storage.broken = {"alpha"}
    runner.tick()
    assert runner.view("beta")["phase"] == "completed"
    assert storage.rollouts()["beta"]["machine"]["phase"] == "completed"
    assert storage.rollouts()["alpha"]["machine"]["phase"] == "progressing"  # not saved: tried again next tick


def test_evidence_past_the_event_size_still_posts_the_decision(tmp_path: Path) -> None:
    runner, metrics, clock, _ = setup(tmp_path, ("alpha",))
    document = {
        "metadata": {"name": "wide"},
        "spec": {
            "service": "wide",
            "tag": "v2",
            "steps": [50, 100],
            "interval": "10s",
            "analysis": {"metrics": [{"name": "errorRate", "resource": f"GET /r{i}/{'x' * 150}", "max": 0.5} for i in range(20)]},
        },
    }
    runner.plane.register({"service": "wide", "host": "127.0.0.1", "port": 7000, "tag": "v2"})
    runner.start(document)
    clock.advance(10.5)
    runner.tick()
    events = [e for e in runner.plane.recent_events() if e.get("service") == "wide" and e["decision"] == "inconclusive"]
    assert events and events[0]["truncated"] is True and events[0]["evidence"] == {}
