"""AgentMetrics counts by route template; several processes' snapshots add up in one exposition."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tidegate.agent.instrumentation.inbound import fallback_route
from tidegate.agent.metrics import AgentMetrics, render
from tidegate.agent.metrics.files import SnapshotWriter


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_inbound_requests_errors_latency_and_in_flight() -> None:
    metrics = AgentMetrics()
    metrics.request_started()
    metrics.request_started()
    metrics.observe_inbound("/orders/{id}", "GET", 200, 0.003, finished=True)
    assert metrics.in_flight == 1
    metrics.observe_inbound("/orders/{id}", "GET", 503, 0.2, finished=True)
    assert metrics.in_flight == 0
    samples = _samples(render([metrics.snapshot()]))
    route = (("method", "GET"), ("route", "/orders/{id}"))
    assert samples[("tidegate_inbound_requests_total", (*route, ("status", "200")))] == 1
    assert samples[("tidegate_inbound_requests_total", (*route, ("status", "503")))] == 1
    assert samples[("tidegate_inbound_errors_total", route)] == 1
    assert samples[("tidegate_inbound_latency_seconds_bucket", (("le", "0.005"), *route))] == 1
    assert samples[("tidegate_inbound_latency_seconds_bucket", (("le", "0.25"), *route))] == 2
    assert samples[("tidegate_inbound_latency_seconds_count", route)] == 2
    assert samples[("tidegate_inbound_in_flight", ())] == 0


def test_outbound_by_service_and_outcome() -> None:
    metrics = AgentMetrics()
    metrics.observe_outbound("orders", True, 0.01)
    metrics.observe_outbound("orders", False, 2.0)
    samples = _samples(render([metrics.snapshot()]))
    assert samples[("tidegate_outbound_requests_total", (("outcome", "ok"), ("service", "orders")))] == 1
    assert samples[("tidegate_outbound_errors_total", (("service", "orders"),))] == 1
    assert samples[("tidegate_outbound_latency_seconds_count", (("service", "orders"),))] == 2


def test_snapshots_of_several_workers_add_up() -> None:
    one, two = AgentMetrics(), AgentMetrics()
    one.observe_inbound("/a", "GET", 200, 0.01)
    two.observe_inbound("/a", "GET", 200, 0.02)
    two.request_started()
    samples = _samples(render([one.snapshot(), two.snapshot()]))
    assert samples[("tidegate_inbound_requests_total", (("method", "GET"), ("route", "/a"), ("status", "200")))] == 2
    assert samples[("tidegate_inbound_in_flight", ())] == 1


def test_fork_reset_starts_from_zero() -> None:
    metrics = AgentMetrics()
    metrics.request_started()
    metrics.observe_outbound("x", True, 0.1)
    metrics.reset_after_fork()
    assert metrics.in_flight == 0
    assert metrics.snapshot()["outbound"] == []


def test_fallback_route_never_keeps_ids() -> None:
    assert fallback_route("/") == "/"
    assert fallback_route("/health") == "/health"
    assert fallback_route("/orders/123/lines") == "/orders/*"
    assert fallback_route("/123") == "/*"
    assert fallback_route("/6f1c2a9e-77aa/x") == "/*/*"


def test_in_flight_is_exact_across_threads() -> None:
    metrics = AgentMetrics()

    def serve() -> None:
        for _ in range(2_000):
            metrics.request_started()
            metrics.observe_inbound("/a", "GET", 200, 0.001, finished=True)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.in_flight == 0
    assert metrics.snapshot()["inbound"][0][3] == 8_000


def test_the_writer_rewrites_when_only_in_flight_changed(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    writer = SnapshotWriter(metrics, tmp_path)
    writer.flush()
    metrics.request_started()  # a request started: no counter moved, in-flight did
    writer.flush()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["in_flight"] == 1
    metrics.observe_inbound("/a", "GET", 200, 0.01, finished=True)
    writer.flush()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["in_flight"] == 0


def test_the_drain_boards_files_in_the_shared_directory_are_not_counted(tmp_path: Path) -> None:
    """During a drain a live worker writes `drain-<pid>.json` (with its in-flight) beside `<pid>.json`."""
    import subprocess
    import sys

    from tidegate.agent.metrics import total_in_flight
    from tidegate.agent.metrics.files import read_all
    from tidegate.agent.offline.board import BOARD, write_json

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        snapshot = {**AgentMetrics().snapshot(), "pid": worker.pid, "in_flight": 2}
        write_json(tmp_path / f"{worker.pid}.json", snapshot)
        write_json(tmp_path / f"drain-{worker.pid}.json", {"pid": worker.pid, "drain": 1.0, "in_flight": 2, "consumers": []})
        write_json(tmp_path / BOARD, {"draining": 1.0, "notices": []})
        snapshots = read_all(tmp_path, skip_pid=os.getpid())
    finally:
        worker.kill()
        worker.wait()
    assert [snap["pid"] for snap in snapshots] == [worker.pid]
    assert total_in_flight(snapshots) == 2
