"""Rollouts against a real control plane: refusals, promotion, abort, inconclusive, kill -9 and resume.

The plane is a real `tidegate control` process; the metrics it judges on are real
pushes to `POST /v1/metrics` (what agents send), for a registered base and gray
instance, so each test sets exactly what gray and base did.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.support.procs import wait_until
from tidegate.control.metrics_store import BUCKETS

FAST = [0] * (len(BUCKETS) + 1)
FAST[0] = 1  # every request under 5 ms
SLOW = [0] * (len(BUCKETS) + 1)
SLOW[5] = 1  # 75-100 ms


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def register(http: httpx.Client, port: int, tag: str = "") -> str:
    body = {"service": "orders", "host": "127.0.0.1", "port": port, "tag": tag}
    answer = http.post("/v1/instances", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


class Traffic:
    """Pushes, every 0.1 s, what a base and a gray instance served: `per_push` requests each,
    gray failing `gray_errors` of them, its latency histogram `gray_latency`."""

    def __init__(self, url: str, base: str, gray: str, per_push: int = 10) -> None:
        self.url = url
        self.ids = (base, gray)
        self.per_push = per_push
        self.gray_errors = 0
        self.gray_latency = FAST
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _row(self, errors: int, histogram: list[int]) -> list[Any]:
        n = self.per_push
        return ["in", "GET /orders/{id}", n, {}, errors, n, 0.001 * n, [count * n for count in histogram]]

    def _run(self) -> None:
        with admin(self.url) as http:
            while not self.stopped.wait(0.1):
                base, gray = self.ids
                try:
                    http.post("/v1/metrics", json={"instance": base, "rows": [self._row(0, FAST)]})
                    http.post("/v1/metrics", json={"instance": gray, "rows": [self._row(self.gray_errors, self.gray_latency)]})
                except httpx.HTTPError:
                    pass  # the plane is being restarted

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlProcess]:
    process = ControlProcess(tmp_path / "data", tmp_path / "control.log", ttl=30)
    try:
        yield process
    finally:
        process.stop()


def rollout(steps: list[int], interval: str = "1s", **analysis: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders-v2"},
        "spec": {"service": "orders", "tag": "v2", "steps": steps, "interval": interval, "analysis": {"minRequests": 20, **analysis}},
    }


def canary_percent(http: httpx.Client) -> float | None:
    answer = http.get("/v1/rules/default/CanaryRule/rollout-orders")
    return float(answer.json()["document"]["spec"]["percent"]) if answer.status_code == 200 else None


def state(http: httpx.Client) -> dict[str, Any]:
    answer = http.get("/v1/rollouts/orders")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_refusals_name_the_field_and_the_service(plane: ControlProcess) -> None:
    with admin(plane.url) as http:
        register(http, 9001)
        refused = http.post("/v1/rollouts", json=rollout([50, 100]))
        assert refused.status_code == 422
        assert refused.json()["field"] == "spec.tag"
        assert "no live instance of tag 'v2'" in refused.json()["error"]
        register(http, 9002, tag="v2")
        for spec, field in (
            ({"steps": [50, 10, 100]}, "spec.steps[1]"),
            ({"interval": "0s"}, "spec.interval"),
            ({"analysis": {"metrics": [{"name": "cpu", "max": 1}]}}, "spec.analysis.metrics[0].name"),
        ):
            document = rollout([50, 100])
            document["spec"].update(spec)
            bad = http.post("/v1/rollouts", json=document)
            assert (bad.status_code, bad.json()["field"]) == (422, field), bad.text
        assert http.get("/v1/rollouts").json() == []
        assert http.post("/v1/rollouts", json=rollout([50, 100], interval="1h")).status_code == 201
        second = http.post("/v1/rollouts", json=rollout([10, 100]))
        assert second.status_code == 409
        assert "'orders' already has a rollout progressing" in second.json()["error"]
        assert state(http)["plan"]["steps"] == [50, 100]  # the first one, untouched
        assert http.post("/v1/rollouts/orders/resume").status_code == 409  # progressing: nothing to resume
        assert http.post("/v1/rollouts/nothing/abort").status_code == 404
        assert http.post("/v1/rollouts/orders/abort", json={"reason": "changed my mind"}).json()["reason"] == "changed my mind"
        assert canary_percent(http) == 0.0
        assert http.post("/v1/rollouts", json=rollout([10, 100], interval="1h")).status_code == 201  # the aborted one is over


def test_healthy_gray_is_promoted_step_by_step_and_the_old_instance_drained(plane: ControlProcess) -> None:
    with admin(plane.url) as http:
        base = register(http, 9001)
        gray = register(http, 9002, tag="v2")
        traffic = Traffic(plane.url, base, gray)
        try:
            started = http.post("/v1/rollouts", json=rollout([25, 50, 100]))
            assert started.status_code == 201, started.text
            assert canary_percent(http) == 25.0
            wait_until(lambda: state(http)["phase"] == "completed", timeout=30, what="promotion")
        finally:
            traffic.stop()
        assert canary_percent(http) == 100.0
        kinds = [decision["kind"] for decision in state(http)["decisions"]]
        assert kinds[0] == "started" and kinds[-2:] == ["promoted", "completed"]
        assert kinds.count("passed") == 2 and "failed" not in kinds
        instances = {i["id"]: i["state"] for i in http.get("/v1/services/orders/instances").json()}
        assert instances[base] == "DRAINING" and instances[gray] != "DRAINING"
        # The old instance's agent is asked to go offline over its watch (an ask in its record).
        asks = {i["id"]: i.get("ask") for i in http.get("/v1/services/orders/instances").json()}
        assert asks[base] is not None and asks[base]["want"] == "offline" and asks[gray] is None, asks
        events = [e for e in http.get("/v1/events").json() if e["type"] == "rollout"]
        assert {e["decision"] for e in events} >= {"started", "passed", "promoted", "completed"}
        assert sorted(e["weight"] for e in events if e["decision"] == "passed") == [25, 50]  # each step judged at its weight
        history = http.get("/v1/rules/default/CanaryRule/rollout-orders/history").json()
        assert [entry["document"]["spec"]["percent"] for entry in reversed(history)] == [25, 50, 100]
        passed = next(e for e in events if e["decision"] == "passed")
        assert passed["evidence"]["*.gray.requests"] >= 20


def test_gray_errors_abort_at_the_first_judged_step_with_the_numbers(plane: ControlProcess) -> None:
    with admin(plane.url) as http:
        base = register(http, 9001)
        gray = register(http, 9002, tag="v2")
        traffic = Traffic(plane.url, base, gray)
        traffic.gray_errors = 1  # 1 of 10: 10%
        try:
            assert http.post("/v1/rollouts", json=rollout([10, 50, 100])).status_code == 201
            wait_until(lambda: state(http)["phase"] == "aborted", timeout=30, what="abort")
        finally:
            traffic.stop()
        now = state(http)
        assert now["step"] == 0 and now["weight"] == 0
        assert "gray error rate 10.00%" in now["reason"] and "above 1.00%" in now["reason"]
        assert canary_percent(http) == 0.0
        aborted = next(e for e in http.get("/v1/events").json() if e.get("decision") == "aborted")
        assert aborted["evidence"]["*.gray.errors"] > 0 and aborted["evidence"]["*.base.errors"] == 0


def test_gray_latency_aborts_on_the_relative_p99_gate(plane: ControlProcess) -> None:
    with admin(plane.url) as http:
        base = register(http, 9001)
        gray = register(http, 9002, tag="v2")
        traffic = Traffic(plane.url, base, gray)
        traffic.gray_latency = SLOW
        try:
            assert http.post("/v1/rollouts", json=rollout([10, 100])).status_code == 201
            wait_until(lambda: state(http)["phase"] == "aborted", timeout=30, what="abort")
        finally:
            traffic.stop()
        assert "x base p99" in state(http)["reason"]


def test_no_traffic_is_inconclusive_and_extends_the_step(plane: ControlProcess) -> None:
    with admin(plane.url) as http:
        register(http, 9001)
        register(http, 9002, tag="v2")
        assert http.post("/v1/rollouts", json=rollout([10, 100], inconclusiveLimit=100)).status_code == 201
        wait_until(lambda: [d["kind"] for d in state(http)["decisions"]].count("inconclusive") >= 2, timeout=30, what="two windows")
        now = state(http)
        assert (now["phase"], now["step"], now["weight"]) == ("progressing", 0, 10)
        assert "passed" not in [d["kind"] for d in now["decisions"]]
        assert now["window_start"] == now["decisions"][0]["at"]  # extended: the window kept its start
        assert "gray had 0 requests" in now["decisions"][-1]["reasons"][0]


def test_a_killed_control_plane_resumes_the_rollout_at_its_step(tmp_path: Path) -> None:
    first = ControlProcess(tmp_path / "data", tmp_path / "control.log", ttl=30)
    try:
        with admin(first.url) as http:
            base = register(http, 9001)
            gray = register(http, 9002, tag="v2")
            traffic = Traffic(first.url, base, gray)
            try:
                assert http.post("/v1/rollouts", json=rollout([10, 20, 50, 100], interval="2s")).status_code == 201
                wait_until(lambda: state(http)["step"] == 1, timeout=30, what="the second step")
            finally:
                traffic.stop()
            before = state(http)
        first.proc.signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    assert before["phase"] == "progressing" and before["weight"] == 20
    second = ControlProcess(tmp_path / "data", tmp_path / "control2.log", ttl=30, port=first.port)
    try:
        with admin(second.url) as http:
            after = state(http)
            assert (after["phase"], after["step"], after["weight"]) == ("progressing", 1, 20)
            assert after["window_start"] > before["window_start"]  # the window starts again: its metrics died with the process
            assert canary_percent(http) == 20.0
            assert [d["kind"] for d in after["decisions"]] == [d["kind"] for d in before["decisions"]]
    finally:
        second.stop()
