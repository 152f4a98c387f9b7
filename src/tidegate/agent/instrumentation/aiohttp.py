"""aiohttp: route `ClientSession._request` calls to service names.

Every verb method and `ws_connect` of a `ClientSession` goes through
`_request(method, str_or_url, **kwargs)`; the URL may be a `str` or a
`yarl.URL`, and relative to the session's `base_url`, so it is resolved the
way the session would before routing. The instance is released when the
response headers arrive (`_request` returns then; the body is read later).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from tidegate.agent.instrumentation.outbound import OutboundInstrumentor
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


class AiohttpInstrumentor(OutboundInstrumentor):
    library = "aiohttp"
    supported = "aiohttp >= 3.8"

    def __init__(self) -> None:
        super().__init__()
        self._original_request: Callable[..., Any] | None = None

    def _patch(self) -> None:
        import aiohttp

        self._original_request = original_request = aiohttp.ClientSession._request
        connect_errors: tuple[type[Exception], ...] = (aiohttp.ClientConnectorError,)
        if hasattr(aiohttp, "ConnectionTimeoutError"):
            connect_errors += (aiohttp.ConnectionTimeoutError,)
        instrumentor = self

        @functools.wraps(original_request)
        async def request(session: aiohttp.ClientSession, method: str, str_or_url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
            router = instrumentor.router()
            if router is None:
                return await original_request(session, method, str_or_url, **kwargs)
            try:
                url = session._build_url(str_or_url)
            except (ValueError, TypeError):  # a malformed URL: leave it to aiohttp to report
                return await original_request(session, method, str_or_url, **kwargs)
            try:
                route = router.route(url.host or "", url.explicit_port)
            except NoInstanceError as error:
                raise no_instance_error_type()(error.service, error.lane) from None
            if route is None:
                return await original_request(session, method, str_or_url, **kwargs)
            tried: list[str] = []
            while True:
                started, ok = instrumentor.clock(), False
                try:
                    response = await original_request(
                        session, method, url.with_host(route.host).with_port(route.port), **kwargs
                    )
                    ok = response.status < 500
                    return response
                except aiohttp.ClientResponseError as error:  # raise_for_status: the instance did answer
                    ok = error.status < 500
                    raise
                except connect_errors:
                    tried.append(route.instance.id)
                    retry = instrumentor.retry_route(router, route.service, tried)
                    if retry is None:
                        raise
                finally:
                    instrumentor.finish(route, ok, started)
                route = retry

        aiohttp.ClientSession._request = request  # type: ignore[method-assign]

    def _unpatch(self) -> None:
        import aiohttp

        aiohttp.ClientSession._request = self._original_request  # type: ignore[method-assign]


INSTRUMENTOR = AiohttpInstrumentor()
