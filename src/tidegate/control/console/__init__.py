"""The console at /console of the control plane (issue 16): server-rendered pages over the plane.

May import the control plane's modules (plane, auth, tokens, metrics_store) and Starlette.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute

from tidegate.control.metrics_store import MetricsStore
from tidegate.control.plane import ControlPlane
from tidegate.control.tokens import RoleTokens


def console_routes(plane: ControlPlane, store: MetricsStore, tokens: RoleTokens, guarded: Callable[..., Any]) -> list[BaseRoute]:
    """The console's routes (none yet)."""
    return []
