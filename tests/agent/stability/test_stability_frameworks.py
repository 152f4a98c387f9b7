"""Inbound blocking in Flask and Django (under gunicorn) at their route hooks, with a rule pushed live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.agent.conftest import ControlPlane, gunicorn
from tests.agent.stability.stability_apps.support import control, rate_limit
from tests.support.procs import free_port, wait_until


@pytest.mark.parametrize(
    ("app", "service", "path", "resource"),
    [
        ("flask_app:app", "users", "/users/7", "GET /users/<int:user_id>"),
        ("django_site", "accounts", "/accounts/7", "GET /accounts/<int:account_id>"),
    ],
)
def test_route_rule_blocks_with_429_before_the_view(
    control_plane: ControlPlane, start: Callable[..., Any], app: str, service: str, path: str, resource: str
) -> None:
    port = free_port()
    start(service, service, gunicorn("-w", "1", "-b", f"127.0.0.1:{port}", app), control_plane.url)
    url = f"http://127.0.0.1:{port}{path}"
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        wait_until(lambda: client.get(url).status_code == 200, what=f"{service} to answer")
        plane.apply_rules(rate_limit("route-limit", resource, 1, app=service))
        refused = wait_until(lambda: (r := client.get(url)).status_code == 429 and r, what="the rule to take effect")
        assert refused.json()["resource"] == resource  # type: ignore[union-attr]
        assert refused.headers["retry-after"] == "1"  # type: ignore[union-attr]
        # other paths of the app are not this resource
        assert client.get(f"http://127.0.0.1:{port}/nowhere").status_code == 404
