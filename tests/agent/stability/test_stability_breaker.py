"""A breaker on a slow dependency, end to end: shop calls inventory by service name; inventory turns slow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.agent.conftest import TOKEN, ControlPlane
from tests.agent.stability.stability_apps.support import control, fault_tolerance, start_app
from tests.support.procs import wait_until


def _events(plane: ControlPlane) -> list[dict[str, Any]]:
    return list(httpx.get(f"{plane.url}/v1/events", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json())


def test_breaker_on_a_slow_dependency_opens_and_recovers(control_plane: ControlPlane, start: Callable[..., Any]) -> None:
    _, inventory = start_app(start, control_plane, "inventory", "inventory", "inventory")
    _, shop = start_app(start, control_plane, "shop", "shop", "shop")
    breaker = fault_tolerance(
        "inventory-slow",
        "http://inventory",
        "CircuitBreakerStrategy",
        {
            "strategy": "SlowRequestRatio",
            "triggerRatio": "50%",
            "statDuration": "2s",
            "recoveryTimeout": "1s",
            "minRequestAmount": 3,
            "slowConditions": {"maxAllowedRt": "100ms"},
        },
    )
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        wait_until(lambda: client.get(f"{shop}/stock").status_code == 200, what="shop to reach inventory")
        plane.apply_rules(breaker)
        client.post(f"{inventory}/delay", params={"s": "0.3"}).raise_for_status()

        def fallback_answered() -> bool:
            response = client.get(f"{shop}/stock")
            return response.status_code == 503 and response.json().get("fallback") is True

        wait_until(fallback_answered, what="the breaker to open on slow calls")
        opened = wait_until(
            lambda: [
                e
                for e in _events(control_plane)
                if e.get("type") == "breaker" and e.get("to") == "OPEN" and e.get("resource") == "http://inventory"
            ],
            what="the breaker-opened event",
        )
        assert opened[0]["service"] == "shop"  # type: ignore[index]

        client.post(f"{inventory}/delay", params={"s": "0"}).raise_for_status()
        wait_until(lambda: client.get(f"{shop}/stock").status_code == 200, what="the breaker to recover through a probe")
        wait_until(
            lambda: [e for e in _events(control_plane) if e.get("type") == "breaker" and e.get("to") == "CLOSED"],
            what="the breaker-closed event",
        )
        assert all(client.get(f"{shop}/stock").status_code == 200 for _ in range(5))
