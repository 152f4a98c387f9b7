"""`tidegate run` loads the agent next to a program's own sitecustomize and OpenTelemetry's."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.agent.conftest import ControlPlane, uvicorn
from tests.support.procs import BIN, free_port, wait_until


def _registered(plane: ControlPlane, service: str, port: int) -> bool:
    return [(i["host"], i["port"]) for i in plane.instances(service)] == [("127.0.0.1", port)]


def test_existing_sitecustomize_still_runs(control_plane, start, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "marker.txt"
    (site / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    port = free_port()
    server = start("site", "sited", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url,
                   env={"PYTHONPATH": str(site)})
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
    wait_until(lambda: '"name": "GET' in server.proc.output() and '"service.name": "otel-probe"' in server.proc.output(),
               what="a span on the console")
    # and tidegate's inbound instrumentation saw the same request
    admin = server.admin_url()
    wait_until(lambda: 'route="/ping"' in httpx.get(f"{admin}/metrics", timeout=5).text, what="tidegate's metrics")
    server.proc.signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    wait_until(lambda: control_plane.instances(service) == [], what="deregistration")


def test_tidegate_run_wrapping_opentelemetry_instrument(control_plane, start) -> None:
    port = free_port()
    server = start("otel-inner", "traced", [str(BIN / "opentelemetry-instrument"), *uvicorn("otel_app:app", "--port", str(port))],
                   control_plane.url, env=OTEL_ENV)
    _check_both_active(control_plane, server, port, "traced")


def test_opentelemetry_instrument_wrapping_tidegate_run(control_plane, start) -> None:
    port = free_port()
    server = start("otel-outer", "traced2", uvicorn("otel_app:app", "--port", str(port)), control_plane.url,
                   env=OTEL_ENV, wrap=[str(BIN / "opentelemetry-instrument")])
    _check_both_active(control_plane, server, port, "traced2")
