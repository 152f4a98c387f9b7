"""Inbound blocking at the framework's route hooks, where the route template is known before the handler runs.

The server-side hooks (starlette.py for Starlette and FastAPI, flask.py,
django.py) call in here. A request to `METHOD /template` is an inbound
resource (`GET /orders/{id}`, Flask's and Django's `/orders/<int:id>`),
admitted by `tidegate.agent.stability.inbound.admit` with the framework's
path parameters, query and headers. A refused request is answered
429 (flow, hot-spot) or 503 (breaker, adaptive) with the configured JSON body
and a `Retry-After` when the refusal says when to come back, and the handler
never runs. An admitted request that raises (other than the framework's 4xx
exceptions), or answers 5xx, counts as an error for the breakers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tidegate.agent.stability import Stability
from tidegate.agent.stability.inbound import admit, client_error
from tidegate.core.governor import Entry
from tidegate.errors import BlockedError

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

SCOPE_KEY = "tidegate.entry"  # where an admitted request's entry waits for its end (scope, environ, META)
ROUTE_SEEN_KEY = "tidegate.route_seen"  # the route whose hook took an ASGI request (an inner hook of the same route passes)


def stability_of(runtime: AgentRuntime | None) -> Stability | None:
    return runtime.capability(Stability) if runtime is not None else None


class Admitted:
    """An admitted request's handler runs inside: the request's entrance is its resource, and the
    entry is left at the end, failed unless the handler set `failed` (or raised a 4xx exception)."""

    __slots__ = ("_stability", "_entry", "_resource", "_token", "failed")

    def __init__(self, stability: Stability, entry: Entry, resource: str) -> None:
        self._stability = stability
        self._entry = entry
        self._resource = resource
        self.failed = True

    def __enter__(self) -> Admitted:
        self._token = self._stability.enter_request(self._resource)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, Exception):
            self.failed = not client_error(error)
        self._stability.leave_request(self._token)
        self._stability.leave(self._entry, self._resource, self.failed)


# -- ASGI (Starlette, FastAPI) ---------------------------------------------------------------


async def govern_asgi(stability: Stability, route: Any, wrapped: Callable[..., Any], scope: Any, receive: Any, send: Any) -> None:
    """Run `route.handle` under the route's inbound resource."""
    if (
        scope.get("type") != "http"
        or SCOPE_KEY in scope
        or scope.get(ROUTE_SEEN_KEY) is route
        or (route.methods and scope["method"] not in route.methods)
    ):
        await wrapped(scope, receive, send)
        return
    scope[ROUTE_SEEN_KEY] = route  # FastAPI's APIRoute.handle calls Route.handle of the same route: decided once
    resource = f"{scope['method']} {route.path}"
    if not stability.governs_inbound(resource):
        await wrapped(scope, receive, send)
        return
    if stability.adaptive_in_force:
        stability.loop_lag.ensure()
    raw_headers = scope.get("headers") or ()
    query: dict[str, list[str]] | None = None

    def query_value(name: str) -> str | None:
        nonlocal query
        if query is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = query.get(name)
        return values[0] if values else None

    def header_value(name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in raw_headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    try:
        entry = admit(stability, resource, scope.get("path_params") or {}, query_value, header_value)
    except BlockedError as error:
        status, headers, body = stability.blocked_response(error)
        await send(
            {"type": "http.response.start", "status": status, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]}
        )
        await send({"type": "http.response.body", "body": body})
        return
    scope[SCOPE_KEY] = entry
    if entry.wait_s > 0.0:
        await asyncio.sleep(entry.wait_s)
    status = 500

    async def send_noting_status(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    with Admitted(stability, entry, resource) as admitted:
        await wrapped(scope, receive, send_noting_status)
        admitted.failed = status >= 500


# -- WSGI (Flask) ------------------------------------------------------------------------------


def govern_flask(stability: Stability, app: Any, wrapped: Callable[[], Any]) -> Any:
    """Run `Flask.dispatch_request` under the matched URL rule's inbound resource."""
    from flask import request

    rule = request.url_rule
    if rule is None or request.routing_exception is not None or SCOPE_KEY in request.environ:
        return wrapped()
    resource = f"{request.method} {rule.rule}"
    if not stability.governs_inbound(resource):
        return wrapped()
    try:
        entry = admit(stability, resource, request.view_args or {}, request.args.get, request.headers.get)
    except BlockedError as error:
        status, headers, body = stability.blocked_response(error)
        return app.response_class(body, status=status, headers=headers)
    request.environ[SCOPE_KEY] = entry
    if entry.wait_s > 0.0:
        time.sleep(entry.wait_s)
    with Admitted(stability, entry, resource) as admitted:
        result = wrapped()
        admitted.failed = getattr(result, "status_code", 200) >= 500
        return result


# -- Django (WSGI and ASGI) --------------------------------------------------------------------


def govern_django_resolved(stability: Stability, request: Any, match: Any, template: str) -> Any:
    """After Django resolved `request`: enter its resource; a refusal swaps the view for the refusal.

    The entry waits in `request.META` until `end_django` (from `get_response`).
    """
    resource = f"{request.method} {template}"
    if not stability.governs_inbound(resource):
        return match
    try:
        entry = admit(stability, resource, match.kwargs or {}, request.GET.get, request.headers.get)
    except BlockedError as error:
        status, headers, body = stability.blocked_response(error)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            from django.http import HttpResponse

            response = HttpResponse(body, status=status)
            for name, value in headers:
                response[name] = value
            return response

        return (refuse, (), {})
    if entry.wait_s > 0.0:
        time.sleep(entry.wait_s)  # resolve_request is sync in both of Django's paths
    request.META[SCOPE_KEY] = (entry, resource)
    stability.enter_request(resource)
    return match


def end_django(stability: Stability, request: Any, response: Any, raised: bool) -> None:
    held = request.META.pop(SCOPE_KEY, None)
    if held is not None:
        entry, resource = held
        stability.leave(entry, resource, raised or getattr(response, "status_code", 200) >= 500)
