"""Inbound ASGI middleware: counts every HTTP request by its route template, and in-flight.

Servers' instrumentors (uvicorn, gunicorn's ASGI worker) wrap the app they load
with `InboundASGI`. The template comes from the framework after routing:
Starlette and FastAPI leave the matched route in `scope["route"]`; Django's
resolver hook leaves `scope["tidegate.route"]`; otherwise `fallback_route`.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, MutableMapping

from tidegate.agent.instrumentation.inbound import fallback_route
from tidegate.agent.metrics import AgentMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    named = scope.get("tidegate.route")
    if isinstance(named, str):
        return named
    return fallback_route(scope.get("path", "/"))


class InboundASGI:
    """Wraps an ASGI app; non-HTTP scopes (lifespan, websocket) pass straight through."""

    __slots__ = ("app", "metrics")

    def __init__(self, app: ASGIApp, metrics: AgentMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app fails before answering

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.request_started()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            metrics.observe_inbound(
                route_template(scope), scope.get("method", ""), status, time.perf_counter() - started, finished=True
            )


def wrap_asgi(app: Any, metrics: AgentMetrics) -> Any:
    """`app` wrapped once (wrapping an already wrapped app is a no-op)."""
    return app if isinstance(app, InboundASGI) else InboundASGI(app, metrics)
