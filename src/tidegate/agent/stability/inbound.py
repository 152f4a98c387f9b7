"""Admitting one inbound request under its resource, whatever the framework that routed it.

A request to `METHOD /template` is an inbound resource (`GET /orders/{id}`);
its origin is the calling service (`x-tidegate-consumer`); hot-spot rules get
the values they name from path parameters (`path:id`), query parameters
(`query:user`) and headers (`header:x-user-id`), read through the lookups the
framework adapter passes (`tidegate.agent.instrumentation.route_guard`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tidegate.agent.stability import Stability
from tidegate.core import context
from tidegate.core.governor import Entry

Lookup = Callable[[str], "str | None"]


def admit(stability: Stability, resource: str, path_params: Mapping[str, Any], query: Lookup, header: Lookup) -> Entry:
    """Enter `resource` as an inbound call (raising BlockedError when refused)."""
    stability.measure_saturation()
    wanted = stability.hotspot_params.get(resource)
    args = None
    if wanted:
        args = {}
        for key in wanted:
            source, _, name = key.partition(":")
            value = path_params.get(name) if source == "path" else query(name) if source == "query" else header(name)
            if value is not None:
                args[key] = str(value)
    return stability.enter(resource, origin=context.current().origin, args=args, inbound=True)


def client_error(error: Exception) -> bool:
    """An exception the framework answers with a 4xx (HTTPException(404), werkzeug's NotFound): not a failure."""
    status = getattr(error, "status_code", None) or getattr(error, "code", None)
    return isinstance(status, int) and 400 <= status < 500
