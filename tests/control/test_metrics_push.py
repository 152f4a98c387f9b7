"""Agents under load push their numbers to a real control plane, which charts them and
serves Prometheus text; a control plane that is gone costs the service nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.conftest import TOKEN, Agented, ControlPlane, uvicorn
from tests.support.procs import free_port, wait_until

APPS = str(Path(__file__).resolve().parents[1] / "agent" / "offline" / "drain_apps")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUSH = {"TIDEGATE_METRICS_PUSH_S": "0.3"}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    control = ControlPlane(tmp_path)
    try:
        yield control
    finally:
        control.proc.stop()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Agented]]:
    programs: list[Agented] = []
    try:
        yield programs
    finally:
        for program in programs:
            program.proc.stop()


def _orders(tmp: Path, programs: list[Agented], url: str, name: str, tag: str = "", workers: int = 1) -> int:
    port = free_port()
    command = uvicorn("provider:app", "--app-dir", APPS, "--port", str(port), "--workers", str(workers))
    programs.append(Agented(tmp, name, "orders", command, url, tag=tag, env={"INSTANCE_ID": name, **PUSH}))
    return port


def _chart(url: str, **params: Any) -> dict[str, Any]:
    now = time.time()
    answer = httpx.get(f"{url}/v1/metrics", params={"from": now - 120, "to": now + 1, "step": 1, **params}, headers=AUTH, timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def _load(port: int, count: int, path: str = "/who") -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.get(f"http://127.0.0.1:{port}{path}").status_code for _ in range(count)]


def test_agents_under_load_push_exact_counts_per_tag(plane: ControlPlane, started: list[Agented], tmp_path: Path) -> None:
    base = _orders(tmp_path, started, plane.url, "orders-base", workers=2)
    gray = _orders(tmp_path, started, plane.url, "orders-gray", tag="gray")
    wait_until(lambda: len(plane.instances("orders")) == 2, what="two orders instances")
    assert _load(base, 120) == [200] * 120
    assert _load(gray, 30) == [200] * 30
    assert _load(gray, 5, "/missing") == [200] * 5

    wait_until(lambda: sum(_chart(plane.url, service="orders", tag="")["passed"]) == 120, timeout=30, what="base's 120 requests")
    wait_until(lambda: sum(_chart(plane.url, service="orders", tag="gray")["passed"]) == 35, timeout=30, what="gray's 35 requests")
    both = _chart(plane.url, service="orders")
    assert sum(both["passed"]) == 155
    assert any(p is not None for p in both["p99_ms"])
    who = _chart(plane.url, service="orders", resource="GET /who", tag="gray")
    assert sum(who["passed"]) == 30

    scraped = httpx.get(f"{plane.url}/metrics", headers=AUTH, timeout=5)
    assert scraped.status_code == 200
    samples = {
        (s.name, s.labels.get("tag"), s.labels.get("resource")): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert samples[("tidegate_service_passed_total", "gray", "*")] == 35
    assert samples[("tidegate_service_passed_total", "", "*")] == 120


def test_the_control_plane_gone_costs_the_service_nothing(plane: ControlPlane, started: list[Agented], tmp_path: Path) -> None:
    port = _orders(tmp_path, started, plane.url, "orders-a")
    wait_until(lambda: plane.instances("orders"), what="orders registered")
    assert _load(port, 20) == [200] * 20
    wait_until(lambda: sum(_chart(plane.url, service="orders")["passed"]) == 20, timeout=30, what="the first 20")
    plane.proc.stop()
    answers = []
    deadline = time.monotonic() + 3  # ten push intervals with nobody to take them
    while time.monotonic() < deadline:
        answers += _load(port, 10)
    assert set(answers) == {200}
    assert started[0].proc.alive()


def test_a_push_needs_the_lease_and_a_registered_instance(plane: ControlPlane) -> None:
    row = ["in", "GET /x", 1, {}, 0, 1, 0.01, []]
    unknown = httpx.post(f"{plane.url}/v1/metrics", json={"instance": "nobody", "rows": [row]}, headers=AUTH, timeout=5)
    assert unknown.status_code == 404 and unknown.json()["field"] == "instance"
    bad = httpx.get(f"{plane.url}/v1/metrics", params={"service": "orders", "step": "soon"}, headers=AUTH, timeout=5)
    assert bad.status_code == 400 and bad.json()["field"] == "step"
    anonymous = httpx.get(f"{plane.url}/v1/metrics", params={"service": "orders"}, timeout=5)
    assert anonymous.status_code == 401
