"""gRPC servers under `tidegate run`: a flow rule answers RESOURCE_EXHAUSTED, an open breaker UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.agent.conftest import PYTHON_APP, ControlPlane
from tests.agent.stability.stability_apps.support import HERE, control, fault_tolerance, rate_limit
from tests.support.procs import free_port, wait_until


def _code(channel: grpc.Channel, method: str) -> grpc.StatusCode:
    try:
        channel.unary_unary(f"/stab.Probe/{method}")(b"x", timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_grpc_methods_are_refused_with_status_codes(control_plane: ControlPlane, start: Callable[..., Any], mode: str) -> None:
    port = free_port()
    server = start(
        f"grpc-{mode}", "probe", [PYTHON_APP, str(HERE / "grpc_probe.py")], control_plane.url, env={"PORT": str(port), "MODE": mode}
    )
    wait_until(lambda: "grpc serving on" in server.proc.output(), what="the gRPC server")
    with control(control_plane) as plane, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert _code(channel, "Ok") == grpc.StatusCode.OK
        plane.apply_rules(
            [
                rate_limit("grpc-ok", "/stab.Probe/Ok", 1, app="probe"),
                fault_tolerance(
                    "grpc-fail",
                    "/stab.Probe/Fail",
                    "CircuitBreakerStrategy",
                    {
                        "strategy": "ErrorRequestCount",
                        "triggerCount": 2,
                        "statDuration": "30s",
                        "recoveryTimeout": "30s",
                        "minRequestAmount": 2,
                    },
                    app="probe",
                ),
            ]
        )
        wait_until(lambda: _code(channel, "Ok") == grpc.StatusCode.RESOURCE_EXHAUSTED, what="the flow rule to refuse")
        wait_until(lambda: _code(channel, "Fail") == grpc.StatusCode.UNAVAILABLE, what="the breaker to open")
        assert _code(channel, "Fail") == grpc.StatusCode.UNAVAILABLE  # stays open for its recovery timeout
