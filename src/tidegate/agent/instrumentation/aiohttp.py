"""aiohttp: route `ClientSession._request` calls to service names through the outbound pipeline.

Every verb method and `ws_connect` of a `ClientSession` goes through
`_request(method, str_or_url, **kwargs)`; the URL may be a `str` or a
`yarl.URL`, and relative to the session's `base_url`, so it is resolved the
way the session would (`_build_url`) before routing. Each attempt hands
`_request` the caller's URL and has `_build_url` answer the instance's (older
aiohttp refuses an absolute URL in a session with a `base_url`). The instance
is released when the response headers arrive (`_request` returns then; the
body is read later). Both are private API: the supported range is bounded.
"""

from __future__ import annotations

from contextvars import ContextVar
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import HttpClientInstrumentor, baggage
from tidegate.agent.offline import pools
from tidegate.agent.outbound.call import ErrorKind
from tidegate.agent.outbound.drive import drive_async
from tidegate.agent.outbound.errors import LibraryErrors
from tidegate.core import context
from tidegate.core.context import DRAINING_HEADER

if TYPE_CHECKING:
    import aiohttp

    from tidegate.agent.runtime import Route

ERRORS = LibraryErrors("aiohttp.ClientConnectionError", "aiohttp.ClientConnectionError")
#: The instance URL the next `_build_url` in this task answers (one attempt's).
_aimed: ContextVar[Any] = ContextVar("tidegate_aiohttp_aimed", default=None)


def outcome(response: aiohttp.ClientResponse) -> tuple[int, str | None]:
    return response.status, response.headers.get(DRAINING_HEADER)


def _with_headers(kwargs: dict[str, Any], pairs: Any) -> dict[str, Any]:
    """kwargs whose `headers` (None, a mapping or pairs, as aiohttp accepts) also set `pairs`."""
    from multidict import CIMultiDict

    headers = CIMultiDict(kwargs.get("headers") or ())
    for name, value in pairs:
        headers[name] = value
    return {**kwargs, "headers": headers}


def _with_baggage(current: context.RequestContext, session: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    given = kwargs.get("headers")
    existing = None
    if given:
        from multidict import CIMultiDict

        existing = CIMultiDict(given).get("baggage")
    if existing is None:
        existing = session.headers.get("baggage")
    value = baggage(current, existing)
    return kwargs if value is None else _with_headers(kwargs, (("baggage", value),))


class AiohttpInstrumentor(HttpClientInstrumentor):
    library = "aiohttp"
    supported = ("aiohttp >= 3.8.3, < 4",)

    def _patch(self, module: ModuleType) -> None:
        connect_errors: tuple[type[Exception], ...] = (module.ClientConnectorError,)
        if hasattr(module, "ConnectionTimeoutError"):
            connect_errors += (module.ConnectionTimeoutError,)
        # What a connection the server closed while it sat idle in the pool raises (lossless offline).
        closed_errors = (module.ServerDisconnectedError, module.ClientOSError)
        response_error = module.ClientResponseError

        def classify(error: Exception) -> ErrorKind | int:
            if isinstance(error, response_error):  # raise_for_status: the instance did answer
                return error.status
            if isinstance(error, connect_errors):
                return ErrorKind.NOTHING_SENT
            return ErrorKind.CLOSED_IDLE if isinstance(error, closed_errors) else ErrorKind.OTHER

        async def request(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            method, str_or_url, *rest = args if len(args) >= 2 else (*args, kwargs.pop("str_or_url"))
            current = context.current()
            kwargs = _with_baggage(current, session, kwargs)
            pipeline = self.pipeline
            if pipeline is None:
                return await wrapped(method, str_or_url, *rest, **kwargs)
            stale = pipeline.stale_addresses(session)
            if stale:
                pools.drop_aiohttp(session, stale)
            try:
                url = session._build_url(str_or_url)
            except (ValueError, TypeError):  # a malformed URL: leave it to aiohttp to report
                return await wrapped(method, str_or_url, *rest, **kwargs)
            call = pipeline.begin(
                url.host or "", url.explicit_port, lane=current.lane, inbound=current.request, errors=ERRORS, method=str(method)
            )
            if call is None:
                return await wrapped(method, str_or_url, *rest, **kwargs)
            if call.refused is not None:
                return call.fallback
            if call.headers:
                kwargs = _with_headers(kwargs, call.headers)

            async def attempt(route: Route) -> aiohttp.ClientResponse:
                instance = route.instance
                token = _aimed.set(url.with_host(instance.host).with_port(instance.port))
                try:
                    return await wrapped(method, str_or_url, *rest, **kwargs)  # type: ignore[no-any-return]
                finally:
                    _aimed.reset(token)

            return await drive_async(call, attempt, outcome, classify)

        def build_url(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            aimed = _aimed.get()
            if aimed is None:
                return wrapped(*args, **kwargs)
            _aimed.set(None)  # the attempt's own call; a later one (a redirect) resolves as usual
            return aimed

        self.wrap(module.ClientSession, "_request", request)
        self.wrap(module.ClientSession, "_build_url", build_url)


INSTRUMENTOR = AiohttpInstrumentor()
