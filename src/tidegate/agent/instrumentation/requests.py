"""requests: route `Session.send` calls to service names, and prewarm every session's connections.

`requests.get(...)` and every `Session` go through `Session.send`, once per
call and once per redirect hop (a hop to an instance's address is not a
service name and goes out untouched). The caller's `PreparedRequest` gets its
URL back after the call; `response.url` is the instance's address. With
`stream=True` the instance is released when the response headers arrive.
Lossless online's HTTP prewarm step (off by default) warms the `Session`s the
app's own code created (`callers.created_by_app`) with whole exchanges (`online/http.py`).
"""

from __future__ import annotations

import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tidegate.agent.instrumentation.base import HttpClientInstrumentor, baggage
from tidegate.agent.instrumentation.callers import created_by_app
from tidegate.agent.offline import pools
from tidegate.agent.online import LosslessOnline
from tidegate.agent.online.http import warm_sessions
from tidegate.agent.outbound.call import ErrorKind, netloc
from tidegate.agent.outbound.drive import drive
from tidegate.agent.outbound.errors import LibraryErrors, set_request_no_response
from tidegate.core import context
from tidegate.core.context import DRAINING_HEADER

if TYPE_CHECKING:
    import requests

    from tidegate.agent.runtime import AgentRuntime, Route
    from tidegate.core.prewarm import PrewarmPlan

ERRORS = LibraryErrors("requests.ConnectionError", "requests.ConnectionError", set_request_no_response)
SESSIONS: weakref.WeakSet[Any] = weakref.WeakSet()


def outcome(response: requests.Response) -> tuple[int, str | None]:
    return response.status_code, response.headers.get(DRAINING_HEADER)


def classify(error: Exception) -> ErrorKind:
    """Connect refused or timed out: nothing sent; any other connection error: a connection closed idle."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if not isinstance(error, requests.ConnectionError):
        return ErrorKind.OTHER
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return (
        ErrorKind.NOTHING_SENT
        if isinstance(error, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)
        else ErrorKind.CLOSED_IDLE
    )


class RequestsInstrumentor(HttpClientInstrumentor):
    library = "requests"
    # offline/pools.py and the prewarm step reach into urllib3's pool manager and pools.
    supported = ("requests >= 2.25, < 3", "urllib3 >= 1.26.5, < 3")

    def _instrumented(self, runtime: AgentRuntime) -> None:
        super()._instrumented(runtime)
        online = runtime.capability(LosslessOnline)
        if online is not None:
            online.prewarm.add_step("http", lambda plan, loop: prewarm(online, plan))

    def _patch(self, module: ModuleType) -> None:
        def send(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            request = args[0] if args else kwargs["request"]
            current = context.current()
            value = baggage(current, request.headers.get("baggage"))
            if value is not None:
                request.headers["baggage"] = value
            pipeline = self.pipeline
            url = request.url
            if pipeline is None or not url:
                return wrapped(*args, **kwargs)
            stale = pipeline.stale_addresses(session)
            if stale:
                pools.drop_requests(session, stale)
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:  # a malformed port: leave it to requests to report
                return wrapped(*args, **kwargs)
            call = pipeline.begin(
                parts.hostname or "",
                port,
                lane=current.lane,
                inbound=current.request,
                errors=ERRORS,
                request=request,
                method=request.method or "GET",
            )
            if call is None:
                return wrapped(*args, **kwargs)
            if call.refused is not None:
                return call.fallback

            def attempt(route: Route) -> requests.Response:
                request.url = parts._replace(netloc=netloc(route.instance)).geturl()
                for name, header in call.headers:
                    request.headers[name] = header
                return wrapped(*args, **kwargs)  # type: ignore[no-any-return]

            try:
                return drive(call, attempt, outcome, classify)
            finally:
                request.url = url

        self.wrap(module.Session, "send", send)
        self.wrap(module.Session, "__init__", _track)


def prewarm(online: LosslessOnline, plan: PrewarmPlan) -> str:
    services, urls = online.http_targets(plan)
    return warm_sessions(services, list(SESSIONS), urls, plan.http_request, "requests.Session")


def _track(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    if created_by_app(depth=2, library="requests"):  # a library's Session (an APM agent's) carries none of the app's calls
        SESSIONS.add(session)
    return result


INSTRUMENTOR = RequestsInstrumentor()
