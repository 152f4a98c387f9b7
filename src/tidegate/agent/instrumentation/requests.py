"""requests: route `Session.send` calls to service names, and prewarm every session's connections.

`requests.get(...)` and every `Session` go through `Session.send`, once per
call and once per redirect hop (a hop to an instance's address is not a
service name and goes out untouched). The caller's `PreparedRequest` gets its
URL back after the call; `response.url` is the instance's address. With
`stream=True` the instance is released when the response headers arrive.
Lossless online's HTTP prewarm step (off by default, `TIDEGATE_PREWARM_HTTP=on`)
sends, through every `Session` the app's own code created (not one a library
made: its frame is outside the interpreter's library directories), one request
(`TIDEGATE_PREWARM_HTTP_REQUEST`, default `HEAD /`) to each instance of each
service `http_targets` names, and reads its answer: the connection is left in
the pool only after a whole exchange, never open with nothing sent (a sync
worker of the callee that accepted it would wait for its request).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import weakref
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import wrapt

from tidegate.agent.instrumentation.base import HttpClientInstrumentor, baggage
from tidegate.agent.offline import pools
from tidegate.agent.online import LosslessOnline
from tidegate.agent.outbound.call import ErrorKind, netloc
from tidegate.agent.outbound.drive import drive
from tidegate.agent.outbound.errors import LibraryErrors, set_request_no_response
from tidegate.core import context
from tidegate.core.context import DRAINING_HEADER

if TYPE_CHECKING:
    import requests

    from tidegate.agent.runtime import AgentRuntime, Route
    from tidegate.core.prewarm import PrewarmPlan, WarmupRequest

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


#: Where the interpreter's own and installed libraries live: a Session created there is a library's.
_LIBRARY_DIRS = tuple(
    sorted(
        {
            os.path.realpath(path) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )
)
#: Frames of these are skipped when looking for who created a Session (tidegate itself, wrapt; requests by module name).
_PASS_THROUGH = (
    os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..")) + os.sep,
    os.path.realpath(os.path.dirname(wrapt.__file__ or "")) + os.sep,
)
PREWARM_TIMEOUT_S = 5.0
USER_AGENT = "tidegate-prewarm"


def created_by_app(depth: int = 2) -> bool:
    """Whether the code creating a Session (the first frame, `depth` up, outside requests, wrapt and
    tidegate) is the app's own: outside the interpreter's library directories."""
    frame = sys._getframe(depth)
    while frame is not None:
        filename = os.path.realpath(frame.f_code.co_filename)
        module = frame.f_globals.get("__name__", "")
        if not (filename.startswith(_PASS_THROUGH) or module == "requests" or module.startswith("requests.")):
            return not filename.startswith(_LIBRARY_DIRS) and not filename.startswith("<frozen")
        frame = frame.f_back  # type: ignore[assignment]
    return False


def warm_connections(sessions: Iterable[Any], urls: Iterable[str], request: WarmupRequest) -> tuple[int, int]:
    """One request per (session, url), its answer read whole: (answered, failed)."""
    answered = failed = 0
    targets = list(urls)
    for session in sessions:
        for url in targets:
            try:
                response = session.request(
                    request.method, url.rstrip("/") + request.path, timeout=PREWARM_TIMEOUT_S, headers={"User-Agent": USER_AGENT}
                )
                response.content  # noqa: B018  # read whole: the connection goes back to the pool only then
                response.close()
                answered += 1
            except Exception:  # an instance that does not answer is not worth a failed startup
                failed += 1
    return answered, failed


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
    if not services:
        return "no service called before or declared"
    sessions = list(SESSIONS)
    if not sessions:
        return f"services {', '.join(services)}: no requests.Session the app made to fill"
    answered, failed = warm_connections(sessions, urls, plan.http_request)
    request = f"{plan.http_request.method} {plan.http_request.path}"
    return f"services {', '.join(services)}: {answered} connection(s) warmed with {request}" + (f", {failed} failed" if failed else "")


def _track(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    if created_by_app(depth=2):  # a library's Session (an APM agent's) carries none of the app's calls
        SESSIONS.add(session)
    return result


INSTRUMENTOR = RequestsInstrumentor()
