"""aiohttp: route `ClientSession._request` calls to service names.

Every verb method and `ws_connect` of a `ClientSession` goes through
`_request(method, str_or_url, **kwargs)`; the URL may be a `str` or a
`yarl.URL`, and relative to the session's `base_url`, so it is resolved the
way the session would before routing. The instance is released when the
response headers arrive (`_request` returns then; the body is read later).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.outbound import OutboundInstrumentor
from tidegate.agent.offline import pools
from tidegate.core import context
from tidegate.core.context import CONSUMER_HEADER, DRAINING_HEADER
from tidegate.errors import NoInstanceError

if TYPE_CHECKING:
    import aiohttp


@functools.cache
def no_instance_error_type() -> type[NoInstanceError]:
    """NoInstanceError that is also an `aiohttp.ClientConnectionError`, so an
    app's existing `except aiohttp.ClientError` still catches it."""
    import aiohttp

    class AiohttpNoInstanceError(NoInstanceError, aiohttp.ClientConnectionError):
        pass

    return AiohttpNoInstanceError


def _with_header(kwargs: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    """kwargs whose `headers` (None, a mapping or pairs, as aiohttp accepts) also set `name`."""
    from multidict import CIMultiDict

    headers = CIMultiDict(kwargs.get("headers") or ())
    headers[name] = value
    return {**kwargs, "headers": headers}


def _with_baggage(instrumentor: OutboundInstrumentor, session: aiohttp.ClientSession, kwargs: dict[str, Any]) -> dict[str, Any]:
    given = kwargs.get("headers")
    existing = None
    if given:
        from multidict import CIMultiDict

        existing = CIMultiDict(given).get("baggage")
    if existing is None:
        existing = session.headers.get("baggage")
    baggage = instrumentor.baggage(existing)
    return kwargs if baggage is None else _with_header(kwargs, "baggage", baggage)


class AiohttpInstrumentor(OutboundInstrumentor):
    library = "aiohttp"
    supported = "aiohttp >= 3.8"
    blocked_base = "aiohttp.ClientConnectionError"

    def __init__(self) -> None:
        super().__init__()
        self._original_request: Callable[..., Any] | None = None

    def _patch(self) -> None:
        import aiohttp

        self._original_request = original_request = aiohttp.ClientSession._request
        connect_errors: tuple[type[Exception], ...] = (aiohttp.ClientConnectorError,)
        if hasattr(aiohttp, "ConnectionTimeoutError"):
            connect_errors += (aiohttp.ConnectionTimeoutError,)
        # What a connection the server closed while it sat idle in the pool raises (lossless offline).
        closed_errors = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
        instrumentor = self

        @functools.wraps(original_request)
        async def request(session: aiohttp.ClientSession, method: str, str_or_url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
            kwargs = _with_baggage(instrumentor, session, kwargs)
            router = instrumentor.router()
            if router is None:
                return await original_request(session, method, str_or_url, **kwargs)
            instrumentor.prepare(session, pools.drop_aiohttp)
            try:
                url = session._build_url(str_or_url)
            except (ValueError, TypeError):  # a malformed URL: leave it to aiohttp to report
                return await original_request(session, method, str_or_url, **kwargs)
            try:
                current = context.current()
                route = router.route(url.host or "", url.explicit_port, current.lane, request=current.request)
            except NoInstanceError as error:
                raise no_instance_error_type()(error.service, error.lane) from None
            if route is None:
                return await original_request(session, method, str_or_url, **kwargs)
            consumer = instrumentor.consumer()
            if consumer:
                kwargs = _with_header(kwargs, CONSUMER_HEADER, consumer)
            guarded, ok = await instrumentor.admit_async(route), False
            if guarded.refused:
                return guarded.fallback  # type: ignore[no-any-return]
            tried: list[str] = []
            try:
                while True:
                    started, ok = instrumentor.clock(), False
                    try:
                        response = await original_request(session, method, url.with_host(route.host).with_port(route.port), **kwargs)
                        ok = response.status < 500
                        instrumentor.answered(route, response.headers.get(DRAINING_HEADER))
                        return response
                    except aiohttp.ClientResponseError as error:  # raise_for_status: the instance did answer
                        ok = error.status < 500
                        raise
                    except connect_errors:
                        tried.append(route.instance.id)
                        retry = instrumentor.retry_route(router, route.service, tried)
                        if retry is None:
                            raise
                    except closed_errors:
                        if not instrumentor.closed_idle(route, tried):
                            raise
                        retry = instrumentor.retry_route(router, route.service, tried)
                        if retry is None:
                            raise
                    finally:
                        instrumentor.finish(route, ok, started)
                    route = retry
            finally:
                guarded.leave(ok)

        aiohttp.ClientSession._request = request  # type: ignore[method-assign]

    def _unpatch(self) -> None:
        import aiohttp

        aiohttp.ClientSession._request = self._original_request  # type: ignore[method-assign]


INSTRUMENTOR = AiohttpInstrumentor()
