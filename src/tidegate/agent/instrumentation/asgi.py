"""Inbound ASGI middleware: counts every HTTP request by its route template, and in-flight.

Servers' instrumentors (uvicorn, gunicorn's ASGI worker) wrap the app they load
with `InboundASGI`. The template comes from the framework after routing:
Starlette and FastAPI leave the matched route in `scope["route"]`; Django's
resolver hook leaves `scope["tidegate.route"]`; otherwise `fallback_route`.

It runs on every request, so it does only what a request needs: a request with
no tidegate headers, served while no lane rule is in force, enters no context
(the empty one is already current), and the app's `send` is wrapped by a plain
function that hands back the server's own awaitable (no extra coroutine per
message). `bench/agent_overhead.py` prints what it costs per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from tidegate.agent import lanes
from tidegate.agent.instrumentation.base import inbound_problem
from tidegate.agent.instrumentation.inbound import fallback_route
from tidegate.agent.offline import drain
from tidegate.agent.runtime import Metrics
from tidegate.core import context
from tidegate.core.baggage import join_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_EMPTY = context.EMPTY


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    named = scope.get("tidegate.route")
    if isinstance(named, str):
        return named
    return fallback_route(scope.get("path", "/"))


def request_context(headers: list[tuple[bytes, bytes]]) -> context.RequestContext:
    """The request's tidegate context from its raw ASGI headers (names are lower-case)."""
    baggage: list[str] = []
    consumer = ""
    for name, value in headers:
        if name == b"baggage":
            baggage.append(value.decode("latin-1"))
        elif name == b"x-tidegate-consumer":
            consumer = value.decode("latin-1")
    if not baggage and not consumer:
        return _EMPTY
    found = context.from_headers(join_headers(baggage), consumer)
    if found.problem:
        inbound_problem(found)
    if found.origin_admin:
        drain.note_consumer(found)  # whom a drain tells directly
    return found


class InboundASGI:
    """Wraps an ASGI app; non-HTTP scopes (lifespan, websocket) pass straight through.

    `response_headers` is a list the agent shares with every wrapped app and
    changes in place (a draining instance adds its notice there); each response
    carries whatever it holds when the response starts.
    """

    __slots__ = ("app", "metrics", "response_headers")

    def __init__(self, app: ASGIApp, metrics: Metrics, response_headers: list[tuple[str, str]] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.response_headers = response_headers if response_headers is not None else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app fails before answering
        extra_headers = self.response_headers

        def send_and_note_status(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if extra_headers:
                    message["headers"] = [
                        *message.get("headers", ()),
                        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers),
                    ]
            return send(message)

        metrics = self.metrics
        metrics.request_started()
        started = perf_counter()
        entered = lanes.color_asgi(scope, request_context(scope.get("headers", ())))
        # The empty context is what a request without tidegate headers runs in: when it is
        # current already (the usual case: each request is its own task), there is nothing to set.
        token = context.enter(entered) if entered is not _EMPTY or context.current() is not _EMPTY else None
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            if token is not None:
                context.leave(token)
            metrics.observe_inbound(route_template(scope), scope.get("method", ""), status, perf_counter() - started, finished=True)


def wrap_asgi(app: Any, metrics: Metrics, response_headers: list[tuple[str, str]] | None = None) -> Any:
    """`app` wrapped once (wrapping an already wrapped app is a no-op)."""
    return app if isinstance(app, InboundASGI) else InboundASGI(app, metrics, response_headers)
