"""httpx: route `Client.send` and `AsyncClient.send` calls to service names.

Patching `send` (not a transport) routes every call whatever transport the
client uses, once per call: redirects the server answers with go where they
point. The caller's `Request` gets its URL and Host header back after the
call, so `response.url` shows the name the caller used. With `stream=True`
the instance is released when the response headers arrive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.outbound import OutboundInstrumentor, netloc
from tidegate.agent.offline import pools
from tidegate.core import context
from tidegate.core.context import CONSUMER_HEADER, DRAINING_HEADER
from tidegate.errors import NoInstanceError

if TYPE_CHECKING:
    import httpx

    from tidegate.agent.runtime import Route, Router


@functools.cache
def no_instance_error_type() -> type[NoInstanceError]:
    """NoInstanceError that is also an `httpx.ConnectError`, so an app's existing
    `except httpx.HTTPError` still catches it."""
    import httpx

    class HttpxNoInstanceError(NoInstanceError, httpx.ConnectError):
        def __init__(self, service: str, lane: str = "", request: httpx.Request | None = None) -> None:
            NoInstanceError.__init__(self, service, lane)
            self._request = request

    return HttpxNoInstanceError


def _first_route(router: Router, request: httpx.Request) -> Route | None:
    url = request.url
    try:
        current = context.current()
        return router.route(url.host, url.port, current.lane, request=current.request)
    except NoInstanceError as error:
        raise no_instance_error_type()(error.service, error.lane, request) from None


def _propagate(instrumentor: OutboundInstrumentor, request: httpx.Request) -> None:
    baggage = instrumentor.baggage(request.headers.get("baggage"))
    if baggage is not None:
        request.headers["baggage"] = baggage


def _aim(request: httpx.Request, url: httpx.URL, route: Route) -> None:
    request.url = url.copy_with(host=route.host, port=route.port)
    request.headers["Host"] = netloc(route.instance)
    consumer = INSTRUMENTOR.consumer()
    if consumer:
        request.headers[CONSUMER_HEADER] = consumer


def _restore(request: httpx.Request, url: httpx.URL, host_header: str | None) -> None:
    request.url = url
    if host_header is None:
        request.headers.pop("Host", None)
    else:
        request.headers["Host"] = host_header


class HttpxInstrumentor(OutboundInstrumentor):
    library = "httpx"
    supported = "httpx >= 0.23"
    blocked_base = "httpx.TransportError"

    def __init__(self) -> None:
        super().__init__()
        self._original_send: Callable[..., Any] | None = None
        self._original_async_send: Callable[..., Any] | None = None

    def _patch(self) -> None:
        import httpx

        self._original_send = original_send = httpx.Client.send
        self._original_async_send = original_async_send = httpx.AsyncClient.send
        connect_errors = (httpx.ConnectError, httpx.ConnectTimeout)
        # What a connection the server closed while it sat idle in the pool raises (lossless offline).
        closed_errors = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
        instrumentor = self

        @functools.wraps(original_send)
        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            _propagate(instrumentor, request)
            router = instrumentor.router()
            if router is not None:
                instrumentor.prepare(client, pools.drop_httpx)
            route = _first_route(router, request) if router is not None else None
            if route is None:
                return original_send(client, request, **kwargs)
            guarded, ok = instrumentor.admit(route), False
            if guarded.refused:
                return guarded.fallback  # type: ignore[no-any-return]
            url, host_header, tried = request.url, request.headers.get("Host"), []
            try:
                while True:
                    _aim(request, url, route)
                    started, ok = instrumentor.clock(), False
                    try:
                        response = original_send(client, request, **kwargs)
                        ok = response.status_code < 500
                        instrumentor.answered(route, response.headers.get(DRAINING_HEADER))
                        return response
                    except connect_errors:
                        tried.append(route.instance.id)
                        retry = instrumentor.retry_route(router, route.service, tried)  # type: ignore[arg-type]
                        if retry is None:
                            raise
                    except closed_errors:
                        if not instrumentor.closed_idle(route, tried):
                            raise
                        retry = instrumentor.retry_route(router, route.service, tried)  # type: ignore[arg-type]
                        if retry is None:
                            raise
                    finally:
                        instrumentor.finish(route, ok, started)
                    route = retry
            finally:
                _restore(request, url, host_header)
                guarded.leave(ok)

        @functools.wraps(original_async_send)
        async def async_send(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            _propagate(instrumentor, request)
            router = instrumentor.router()
            if router is not None:
                instrumentor.prepare(client, pools.drop_httpx_async)
            route = _first_route(router, request) if router is not None else None
            if route is None:
                return await original_async_send(client, request, **kwargs)
            guarded, ok = await instrumentor.admit_async(route), False
            if guarded.refused:
                return guarded.fallback  # type: ignore[no-any-return]
            url, host_header, tried = request.url, request.headers.get("Host"), []
            try:
                while True:
                    _aim(request, url, route)
                    started, ok = instrumentor.clock(), False
                    try:
                        response = await original_async_send(client, request, **kwargs)
                        ok = response.status_code < 500
                        instrumentor.answered(route, response.headers.get(DRAINING_HEADER))
                        return response
                    except connect_errors:
                        tried.append(route.instance.id)
                        retry = instrumentor.retry_route(router, route.service, tried)  # type: ignore[arg-type]
                        if retry is None:
                            raise
                    except closed_errors:
                        if not instrumentor.closed_idle(route, tried):
                            raise
                        retry = instrumentor.retry_route(router, route.service, tried)  # type: ignore[arg-type]
                        if retry is None:
                            raise
                    finally:
                        instrumentor.finish(route, ok, started)
                    route = retry
            finally:
                _restore(request, url, host_header)
                guarded.leave(ok)

        httpx.Client.send = send  # type: ignore[method-assign]
        httpx.AsyncClient.send = async_send  # type: ignore[method-assign]

    def _unpatch(self) -> None:
        import httpx

        httpx.Client.send = self._original_send  # type: ignore[method-assign]
        httpx.AsyncClient.send = self._original_async_send  # type: ignore[method-assign]


INSTRUMENTOR = HttpxInstrumentor()
