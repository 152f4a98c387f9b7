"""Lossless online with real processes: registration waits for startup and prewarm; readiness follows it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import ControlPlane, gunicorn, uvicorn
from tests.support.procs import free_port, wait_until

ONLINE_APPS = Path(__file__).resolve().parent / "online_apps"
POSTGRES = os.environ.get("TIDEGATE_TEST_POSTGRES")
REDIS = os.environ.get("TIDEGATE_TEST_REDIS")


def _ready_status(admin: str) -> int:
    return httpx.get(f"{admin}/ready", timeout=5).status_code


def _stats(port: int) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json())


def _start_app(start: Any, plane: ControlPlane, tmp_path: Path, service: str, env: dict[str, str]) -> tuple[Any, int]:
    port = free_port()
    program = start(
        service,
        service,
        uvicorn("warm_app:app", "--port", str(port)),
        plane.url,
        env={"PYTHONPATH": str(ONLINE_APPS), "TIDEGATE_STATE_DIR": str(tmp_path / "state"), **env},
    )
    return program, port


def test_ready_and_registration_wait_for_warmup_requests(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    program, port = _start_app(
        start,
        control_plane,
        tmp_path,
        "catalog",
        {
            "ONLINE_GATE": str(gate),
            "TIDEGATE_WARMUP_REQUESTS": "GET /catalog x20, GET /stats x2",
        },
    )
    admin = program.admin_url()
    # The app is up and taking its warm-up requests, which the gate holds open.
    wait_until(lambda: _stats(port)["warmups"] == 1, what="the first warm-up request")
    assert _ready_status(admin) == 503
    assert control_plane.instances("catalog") == []
    gate.touch()
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200 after prewarm")
    [instance] = control_plane.instances("catalog")
    stats = _stats(port)
    assert stats["warmups"] == 20
    assert 0 < stats["last_warmup_at"] <= instance["registered_at"]
    assert stats["startup_done_at"] <= instance["registered_at"]
    assert instance["state"] == "WARMING"
    assert "warm-up requests: 22 x 200" in program.proc.output()


def test_register_delay_holds_readiness(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    program, port = _start_app(
        start,
        control_plane,
        tmp_path,
        "delayed",
        {
            "ONLINE_GATE": str(gate),
            "TIDEGATE_WARMUP_REQUESTS": "GET /catalog",
            "TIDEGATE_REGISTER_DELAY": "1",
            "TIDEGATE_WARMUP_WINDOW": "0",
        },
    )
    admin = program.admin_url()
    wait_until(lambda: _stats(port)["warmups"] == 1, what="the warm-up request")
    gate.touch()
    wait_until(lambda: "register delay: 1 s" in program.proc.output(), what="the register delay to pass")
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200")
    [instance] = control_plane.instances("delayed")
    assert instance["state"] == "SERVING"  # no warm-up window: straight to SERVING


def test_malformed_warmup_requests_name_the_variable_and_the_app_serves(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    program, port = _start_app(start, control_plane, tmp_path, "sloppy", {"TIDEGATE_WARMUP_REQUESTS": "GET /catalog x20, FETCH"})
    admin = program.admin_url()
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200")
    assert "TIDEGATE_WARMUP_REQUESTS: 'FETCH' is not 'METHOD /path xN'" in program.proc.output()
    assert _stats(port)["warmups"] == 0
    assert len(control_plane.instances("sloppy")) == 1


@pytest.mark.skipif(not POSTGRES, reason="TIDEGATE_TEST_POSTGRES is not set (bash scripts/test.sh sets it)")
def test_sqlalchemy_pool_is_full_at_registration(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    name = f"warm-{uuid.uuid4().hex[:8]}"
    program, port = _start_app(
        start,
        control_plane,
        tmp_path,
        "pooled",
        {
            "ONLINE_DB": str(POSTGRES),
            "ONLINE_POOL_SIZE": "6",
            "ONLINE_APP_NAME": name,
        },
    )
    admin = program.admin_url()
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200")
    [instance] = control_plane.instances("pooled")
    stats = _stats(port)
    assert stats["pool_size"] == 6
    assert stats["pool_checkedin"] == 6
    assert len(stats["connects"]) == 6
    assert max(stats["connects"]) <= instance["registered_at"]  # every connection opened before registration
    assert _backends(name) == 6


@pytest.mark.skipif(not POSTGRES, reason="TIDEGATE_TEST_POSTGRES is not set (bash scripts/test.sh sets it)")
def test_async_sqlalchemy_pool_is_full_at_registration(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio needs greenlet (sqlalchemy[asyncio]), not in this venv")
    program, port = _start_app(start, control_plane, tmp_path, "apooled", {"ONLINE_ASYNC_DB": str(POSTGRES)})
    wait_until(lambda: _ready_status(program.admin_url()) == 200, what="/ready 200")
    stats = _stats(port)
    assert (stats["pool_size"], stats["pool_checkedin"]) == (4, 4)
    assert "+4 (pool 4/4)" in program.proc.output()


def test_prewarm_switched_off_leaves_the_pool_empty(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    if not POSTGRES:
        pytest.skip("TIDEGATE_TEST_POSTGRES is not set (bash scripts/test.sh sets it)")
    program, port = _start_app(
        start,
        control_plane,
        tmp_path,
        "cold",
        {
            "ONLINE_DB": str(POSTGRES),
            "TIDEGATE_PREWARM_SQLALCHEMY": "off",
        },
    )
    admin = program.admin_url()
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200")
    assert _stats(port)["pool_checkedin"] == 0
    assert "sqlalchemy: off" in program.proc.output()


@pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (bash scripts/test.sh sets it)")
def test_redis_pool_holds_open_connections_at_registration(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    program, port = _start_app(
        start, control_plane, tmp_path, "cached", {"ONLINE_REDIS": str(REDIS), "TIDEGATE_PREWARM_REDIS_CONNECTIONS": "3"}
    )
    admin = program.admin_url()
    wait_until(lambda: _ready_status(admin) == 200, what="/ready 200")
    assert _stats(port)["redis_idle"] == 3
    assert "redis: 3 connection(s) in 1 pool(s)" in program.proc.output()


def test_warming_becomes_serving_after_the_window(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    program, _ = _start_app(start, control_plane, tmp_path, "ramped", {"TIDEGATE_WARMUP_WINDOW": "1"})
    wait_until(lambda: [i["state"] for i in control_plane.instances("ramped")] == ["WARMING"], what="registered WARMING")
    wait_until(lambda: [i["state"] for i in control_plane.instances("ramped")] == ["SERVING"], what="SERVING after the window")
    assert _ready_status(program.admin_url()) == 200


def test_gunicorn_workers_send_warmup_requests_before_registration(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    log = tmp_path / "warmups"
    port = free_port()
    program = start(
        "wsgi",
        "wsgi",
        gunicorn("warm_wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2"),
        control_plane.url,
        env={"PYTHONPATH": str(ONLINE_APPS), "ONLINE_LOG": str(log), "TIDEGATE_WARMUP_REQUESTS": "GET /x x5"},
    )
    wait_until(lambda: _ready_status(program.admin_url()) == 200, what="/ready 200")
    [instance] = control_plane.instances("wsgi")
    times = [float(line) for line in log.read_text().split()]
    assert len(times) >= 5  # each worker sends its own; the first to finish opens registration
    assert sorted(times)[4] <= instance["registered_at"]


def test_http_connections_open_to_services_called_in_the_previous_life(control_plane: ControlPlane, start: Any, tmp_path: Path) -> None:
    _start_app(start, control_plane, tmp_path, "catalog", {})
    wait_until(lambda: len(control_plane.instances("catalog")) == 1, what="catalog registered")
    env = {"PYTHONPATH": str(ONLINE_APPS), "TIDEGATE_STATE_DIR": str(tmp_path / "state"), "TIDEGATE_PREWARM_HTTP": "on"}
    port = free_port()
    first = start("front-1", "front", uvicorn("front_app:app", "--port", str(port)), control_plane.url, env=env)
    wait_until(lambda: _ready_status(first.admin_url()) == 200, what="front ready")
    assert "http: no service called before or declared" in first.proc.output()
    assert httpx.get(f"http://127.0.0.1:{port}/call", timeout=10).status_code == 200
    assert (tmp_path / "state" / "front.called.json").read_text() == '["catalog"]'
    first.proc.stop()
    second = start("front-2", "front", uvicorn("front_app:app", "--port", str(free_port())), control_plane.url, env=env)
    wait_until(lambda: _ready_status(second.admin_url()) == 200, what="front ready again")
    assert "http: services catalog: 1 connection(s) warmed with HEAD /" in second.proc.output()


def _backends(application_name: str) -> int:
    import psycopg

    with psycopg.connect(str(POSTGRES)) as connection:
        row = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)).fetchone()
    return int(row[0]) if row else 0
