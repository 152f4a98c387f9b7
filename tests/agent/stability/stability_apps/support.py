"""Helpers of the stability end-to-end tests: rule documents, starting the apps, counting answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.agent.conftest import TOKEN, Agented, ControlPlane, uvicorn
from tests.support.procs import free_port, wait_until
from tidegate.client.control import ControlClient

HERE = Path(__file__).resolve().parent


def control(plane: ControlPlane) -> ControlClient:
    return ControlClient(plane.url, TOKEN)


def fault_tolerance(name: str, resource: str, kind: str, spec: dict[str, Any], app: str = "shop") -> dict[str, Any]:
    """A FaultToleranceRule with one inline strategy, for `app` only."""
    return {
        "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
        "kind": "FaultToleranceRule",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "targets": [{"targetResourceName": resource}], "strategies": [{"kind": kind, "spec": spec}]},
    }


def rate_limit(name: str, resource: str, threshold: int, app: str = "shop") -> dict[str, Any]:
    return fault_tolerance(name, resource, "RateLimitStrategy", {"threshold": threshold, "statDurationSeconds": 1}, app)


def start_app(
    start: Callable[..., Agented], plane: ControlPlane, name: str, service: str, module: str, env: dict[str, str] | None = None
) -> tuple[Agented, str]:
    """`module:app` under uvicorn under `tidegate run`; (the program, its base URL) once it answers."""
    port = free_port()
    program = start(name, service, uvicorn(f"{module}:app", "--app-dir", str(HERE), "--port", str(port)), plane.url, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: plane.instances(service), what=f"{service} to register")
    return program, base


def statuses(client: httpx.Client, url: str, count: int) -> tuple[list[int], float]:
    """Send `count` requests one after another; their statuses and the run's duration in seconds."""
    started = time.monotonic()
    found = [client.get(url).status_code for _ in range(count)]
    return found, time.monotonic() - started


def overload(client: httpx.Client, url: str, seconds: float) -> tuple[list[int], float]:
    """Send requests one after another for about `seconds` (the load's length, not a measurement);
    their statuses and the run's measured duration."""
    started = time.monotonic()
    found: list[int] = []
    while time.monotonic() - started < seconds:
        found.append(client.get(url).status_code)
    return found, time.monotonic() - started


def windows(duration_s: float) -> int:
    """How many one-second windows a run of `duration_s` can touch (a window started before it, and each second in it)."""
    return int(duration_s) + 2


def until_status(client: httpx.Client, url: str, status: int, what: str, timeout: float = 30.0) -> None:
    wait_until(lambda: client.get(url).status_code == status, timeout=timeout, interval=0.05, what=what)
