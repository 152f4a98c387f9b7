"""The app serves while the control plane is down, and registers once it comes up."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.agent.conftest import TTL_S, ControlPlane, uvicorn
from tests.support.procs import free_port, http_ok, wait_until


def test_app_serves_without_control_plane_and_registers_when_it_comes_up(start, tmp_path: Path) -> None:
    control_port = free_port()
    port = free_port()
    server = start("down", "patient", uvicorn("fastapi_app:app", "--port", str(port)), f"http://127.0.0.1:{control_port}")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/hello"), what="the app to serve without a control plane")
    admin = server.admin_url()
    assert httpx.get(f"{admin}/ready", timeout=5).status_code == 503
    assert httpx.get(f"{admin}/live", timeout=5).status_code == 200
    assert httpx.get(f"{admin}/state", timeout=5).json()["state"] == "STARTING"

    plane = ControlPlane(tmp_path, port=control_port)
    try:
        wait_until(lambda: [i["port"] for i in plane.instances("patient")] == [port], what="registration after the outage")
        wait_until(lambda: http_ok(f"{admin}/ready"), what="readiness after registration")
        assert server.proc.alive()
        server.proc.signal(signal.SIGTERM)
        server.proc.wait(timeout=30)
        wait_until(lambda: plane.instances("patient") == [], what="deregistration")
    finally:
        plane.proc.stop()


def test_instance_registers_again_after_a_control_plane_restart(start, tmp_path: Path) -> None:
    control_port = free_port()
    port = free_port()
    plane = ControlPlane(tmp_path, port=control_port)
    try:
        start("restart", "phoenix", uvicorn("starlette_app:app", "--port", str(port)), plane.url)
        wait_until(lambda: [i["port"] for i in plane.instances("phoenix")] == [port], what="registration")
    finally:
        plane.proc.stop()
    # a control plane with a fresh data dir on the same port knows nothing of the instance
    second = tmp_path / "second"
    second.mkdir()
    plane = ControlPlane(second, port=control_port)
    try:
        wait_until(lambda: [i["port"] for i in plane.instances("phoenix")] == [port], what="registration again")
    finally:
        plane.proc.stop()


def test_heartbeat_follows_the_lease_the_control_plane_grants(control_plane, start) -> None:
    port = free_port()
    server = start(
        "lease", "steady", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url, env={"TIDEGATE_HEARTBEAT_INTERVAL": ""}
    )
    wait_until(lambda: [i["port"] for i in control_plane.instances("steady")] == [port], what="registration")
    # with no interval set, the agent renews every third of the 2 s lease: over four leases it is never dropped
    deadline = time.monotonic() + 4 * TTL_S
    while time.monotonic() < deadline:
        assert [i["port"] for i in control_plane.instances("steady")] == [port], server.fail_report()
        time.sleep(0.2)
    assert "registering it again" not in server.proc.output()
