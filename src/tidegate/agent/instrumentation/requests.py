"""requests: route `Session.send` calls to service names.

`requests.get(...)` and every `Session` go through `Session.send`, once per
call and once per redirect hop (a hop to an instance's address is not a
service name and goes out untouched). The caller's `PreparedRequest` gets
its URL back after the call; `response.url` is the instance's address. With
`stream=True` the instance is released when the response headers arrive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from tidegate.agent.instrumentation.outbound import OutboundInstrumentor, netloc
from tidegate.agent.offline import pools
from tidegate.core import context
from tidegate.core.context import CONSUMER_HEADER, DRAINING_HEADER
from tidegate.errors import NoInstanceError

if TYPE_CHECKING:
    import requests

    from tidegate.agent.runtime import Route, Router


@functools.cache
def no_instance_error_type() -> type[NoInstanceError]:
    """NoInstanceError that is also a `requests.ConnectionError`, so an app's
    existing `except requests.RequestException` still catches it."""
    import requests

    class RequestsNoInstanceError(NoInstanceError, requests.ConnectionError):
        def __init__(self, service: str, lane: str = "", request: requests.PreparedRequest | None = None) -> None:
            NoInstanceError.__init__(self, service, lane)
            self.request = request
            self.response = None

    return RequestsNoInstanceError


def _first_route(router: Router, request: requests.PreparedRequest, parts: SplitResult) -> Route | None:
    try:
        current = context.current()
        return router.route(parts.hostname or "", parts.port, current.lane, request=current.request)
    except NoInstanceError as error:
        raise no_instance_error_type()(error.service, error.lane, request) from None
    except ValueError:  # a malformed port: leave it to requests to report
        return None


def _sent_nothing(error: Exception) -> bool:
    """True when the connection failed before the request was written."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


class RequestsInstrumentor(OutboundInstrumentor):
    library = "requests"
    supported = "requests >= 2.25"
    blocked_base = "requests.ConnectionError"

    def __init__(self) -> None:
        super().__init__()
        self._original_send: Callable[..., Any] | None = None

    def _patch(self) -> None:
        import requests

        self._original_send = original_send = requests.Session.send
        instrumentor = self

        @functools.wraps(original_send)
        def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            baggage = instrumentor.baggage(request.headers.get("baggage"))
            if baggage is not None:
                request.headers["baggage"] = baggage
            router = instrumentor.router()
            if router is None or not request.url:
                return original_send(session, request, **kwargs)
            instrumentor.prepare(session, pools.drop_requests)
            url = request.url
            parts = urlsplit(url)
            route = _first_route(router, request, parts)
            if route is None:
                return original_send(session, request, **kwargs)
            guarded, ok = instrumentor.admit(route), False
            if guarded.refused:
                return guarded.fallback  # type: ignore[no-any-return]
            tried: list[str] = []
            consumer = instrumentor.consumer()
            try:
                while True:
                    request.url = parts._replace(netloc=netloc(route.instance)).geturl()
                    if consumer:
                        request.headers[CONSUMER_HEADER] = consumer
                    started, ok = instrumentor.clock(), False
                    try:
                        response = original_send(session, request, **kwargs)
                        ok = response.status_code < 500
                        instrumentor.answered(route, response.headers.get(DRAINING_HEADER))
                        return response
                    except requests.ConnectionError as error:  # ConnectTimeout is one too
                        if _sent_nothing(error):
                            tried.append(route.instance.id)
                        elif not instrumentor.closed_idle(route, tried):  # a draining server closed it idle: never seen
                            raise
                        retry = instrumentor.retry_route(router, route.service, tried)
                        if retry is None:
                            raise
                    finally:
                        instrumentor.finish(route, ok, started)
                    route = retry
            finally:
                request.url = url
                guarded.leave(ok)

        requests.Session.send = send  # type: ignore[method-assign]

    def _unpatch(self) -> None:
        import requests

        requests.Session.send = self._original_send  # type: ignore[method-assign]


INSTRUMENTOR = RequestsInstrumentor()
