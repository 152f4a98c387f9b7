"""httpx: route `Client.send` and `AsyncClient.send` calls to service names through the outbound pipeline.

Patching `send` (not a transport) routes every call whatever transport the
client uses, once per call: redirects the server answers with go where they
point. Each attempt's URL and Host header name the instance's address; the
caller's `Request` gets its own back after the call, so `response.url` shows
the name the caller used. With `stream=True` the instance is released when the
response headers arrive. The errors raised are httpx's own too, carrying the
request (`outbound/errors.py`).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import HttpClientInstrumentor, baggage
from tidegate.agent.offline import pools
from tidegate.agent.outbound.call import ErrorKind, OutboundCall, netloc
from tidegate.agent.outbound.drive import drive, drive_async
from tidegate.agent.outbound.errors import LibraryErrors, set_request
from tidegate.core import context
from tidegate.core.context import DRAINING_HEADER

if TYPE_CHECKING:
    import httpx

    from tidegate.agent.runtime import Route

ERRORS = LibraryErrors("httpx.ConnectError", "httpx.TransportError", set_request)


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.headers.get(DRAINING_HEADER)


class HttpxInstrumentor(HttpClientInstrumentor):
    library = "httpx"
    # offline/pools.py reaches into httpx's transports and httpcore's pool: bounded at their next major.
    supported = ("httpx >= 0.23, < 1", "httpcore >= 0.15, < 2")

    def _patch(self, module: ModuleType) -> None:
        connect_errors = (module.ConnectError, module.ConnectTimeout)
        # What a connection the server closed while it sat idle in the pool raises (lossless offline).
        closed_errors = (module.RemoteProtocolError, module.ReadError, module.WriteError)

        def classify(error: Exception) -> ErrorKind:
            if isinstance(error, connect_errors):
                return ErrorKind.NOTHING_SENT
            return ErrorKind.CLOSED_IDLE if isinstance(error, closed_errors) else ErrorKind.OTHER

        def begin(client: Any, request: httpx.Request, drop: pools.Drop) -> OutboundCall | None:
            current = context.current()
            value = baggage(current, request.headers.get("baggage"))
            if value is not None:
                request.headers["baggage"] = value
            pipeline = self.pipeline
            if pipeline is None:
                return None
            stale = pipeline.stale_addresses(client)
            if stale:
                drop(client, stale)
            url = request.url
            return pipeline.begin(
                url.host, url.port, lane=current.lane, inbound=current.request, errors=ERRORS, request=request, method=request.method
            )

        def aim(call: OutboundCall, request: httpx.Request, url: httpx.URL, route: Route) -> None:
            instance = route.instance
            request.url = url.copy_with(host=instance.host, port=instance.port)
            request.headers["Host"] = netloc(instance)
            for name, value in call.headers:
                request.headers[name] = value

        def restore(request: httpx.Request, url: httpx.URL, host_header: str | None) -> None:
            request.url = url
            if host_header is None:
                request.headers.pop("Host", None)
            else:
                request.headers["Host"] = host_header

        def send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            request = args[0] if args else kwargs["request"]
            call = begin(client, request, pools.drop_httpx)
            if call is None:
                return wrapped(*args, **kwargs)
            if call.refused is not None:
                return call.fallback
            url, host_header = request.url, request.headers.get("Host")

            def attempt(route: Route) -> httpx.Response:
                aim(call, request, url, route)
                return wrapped(*args, **kwargs)  # type: ignore[no-any-return]

            try:
                return drive(call, attempt, outcome, classify)
            finally:
                restore(request, url, host_header)

        async def async_send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            request = args[0] if args else kwargs["request"]
            call = begin(client, request, pools.drop_httpx_async)
            if call is None:
                return await wrapped(*args, **kwargs)
            if call.refused is not None:
                return call.fallback
            url, host_header = request.url, request.headers.get("Host")

            async def attempt(route: Route) -> httpx.Response:
                aim(call, request, url, route)
                return await wrapped(*args, **kwargs)  # type: ignore[no-any-return]

            try:
                return await drive_async(call, attempt, outcome, classify)
            finally:
                restore(request, url, host_header)

        self.wrap(module.Client, "send", send)
        self.wrap(module.AsyncClient, "send", async_send)


INSTRUMENTOR = HttpxInstrumentor()
