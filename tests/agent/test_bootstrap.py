"""`tidegate run` loads the agent next to a program's own sitecustomize and OpenTelemetry's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from tests.agent.conftest import ControlPlane, uvicorn
from tests.support.procs import BIN, free_port, wait_until
from tidegate.agent.command import BOOTSTRAP_DIR


def _registered(plane: ControlPlane, service: str, port: int) -> bool:
    return [(i["host"], i["port"]) for i in plane.instances(service)] == [("127.0.0.1", port)]


def test_existing_sitecustomize_still_runs(control_plane, start, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "marker.txt"
    (site / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    port = free_port()
    server = start("site", "sited", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url, env={"PYTHONPATH": str(site)})
    wait_until(lambda: _registered(control_plane, "sited", port), what="registration")
    assert marker.read_text() == "ran"
    server.proc.signal(signal.SIGTERM)
    server.proc.wait(timeout=30)


OTEL_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_SERVICE_NAME": "otel-probe",
}


def _check_both_active(control_plane: ControlPlane, server, port: int, service: str) -> None:
    wait_until(lambda: _registered(control_plane, service, port), what="registration under OpenTelemetry")
    assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong"
    # OpenTelemetry's SDK, set up by opentelemetry-instrument only, exported the request's span
    wait_until(
        lambda: '"name": "GET' in server.proc.output() and '"service.name": "otel-probe"' in server.proc.output(),
        what="a span on the console",
    )
    # and tidegate's inbound instrumentation saw the same request
    admin = server.admin_url()
    wait_until(lambda: 'route="/ping"' in httpx.get(f"{admin}/metrics", timeout=5).text, what="tidegate's metrics")
    server.proc.signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    wait_until(lambda: control_plane.instances(service) == [], what="deregistration")


def test_tidegate_run_wrapping_opentelemetry_instrument(control_plane, start) -> None:
    port = free_port()
    server = start(
        "otel-inner",
        "traced",
        [str(BIN / "opentelemetry-instrument"), *uvicorn("otel_app:app", "--port", str(port))],
        control_plane.url,
        env=OTEL_ENV,
    )
    _check_both_active(control_plane, server, port, "traced")


def test_opentelemetry_instrument_wrapping_tidegate_run(control_plane, start) -> None:
    port = free_port()
    server = start(
        "otel-outer",
        "traced2",
        uvicorn("otel_app:app", "--port", str(port)),
        control_plane.url,
        env=OTEL_ENV,
        wrap=[str(BIN / "opentelemetry-instrument")],
    )
    _check_both_active(control_plane, server, port, "traced2")


def test_invalid_settings_leave_the_program_running_without_agent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update({"TIDEGATE_AGENT": "1", "PYTHONPATH": BOOTSTRAP_DIR, "TIDEGATE_SERVICE": "ok", "TIDEGATE_ADMIN_PORT": "99999"})
    probe = "from tidegate.agent import boot; print('state', boot.current_state())"
    result = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0
    assert "state None" in result.stdout
    assert "TIDEGATE_ADMIN_PORT" in result.stderr


def test_explicit_start_and_current_state(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["TIDEGATE_SERVICE"] = "explicit"
    probe = "from tidegate.agent import boot; print(boot.current_state()); boot.start(); print(boot.current_state()); print(boot.start() is boot.start())"
    result = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert result.stdout.split() == ["None", "STARTING", "True"], result.stderr


def test_taken_admin_port_leaves_the_app_serving_and_registered(control_plane, start) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin_port = taken.getsockname()[1]
        port = free_port()
        server = start(
            "taken",
            "stubborn",
            uvicorn("starlette_app:app", "--port", str(port)),
            control_plane.url,
            env={"TIDEGATE_ADMIN_PORT": str(admin_port)},
        )
        wait_until(lambda: _registered(control_plane, "stubborn", port), what="registration without an admin endpoint")
        assert httpx.get(f"http://127.0.0.1:{port}/items/1", timeout=5).status_code == 200
        assert control_plane.instances("stubborn")[0]["admin_port"] is None
        assert "admin endpoint not started" in server.proc.output()
