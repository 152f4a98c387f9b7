"""The app serves while the control plane is down, and registers once it comes up."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.agent.conftest import ControlPlane, uvicorn
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
