"""grpcio (sync and `grpc.aio`): the lane rides in `baggage` metadata on every call, and is read by every server.

Client side: channels made by `grpc.insecure_channel` / `secure_channel` are
wrapped with an interceptor, and `grpc.aio` channels get one in their
`interceptors`, for unary and streaming calls alike. A call made in a
request with a lane carries `baggage` with `tidegate.lane=<lane>` merged into
the call's own `baggage` metadata (other members untouched); a call without a
lane passes the inbound baggage on as it came.

Server side: `grpc.server` and `grpc.aio.server` get an interceptor first in
line that reads `baggage` and `x-tidegate-consumer` from the invocation
metadata and runs the handler (unary or streaming, sync or async) in that
context, so whatever it calls (HTTP, gRPC, a message queue) carries the lane,
and under the method's stability rules (`governed`).

Stability: every served method is a stability resource, refused before its
handler runs. The resource is the full method name (`/shop.Orders/Get`), the
origin the calling service from `x-tidegate-consumer` metadata. A refused
call is aborted with RESOURCE_EXHAUSTED (flow, hot-spot) or UNAVAILABLE
(breaker, adaptive) and the refusal's message; an admitted call that raises
counts as an error for the breakers. Unary and streaming handlers, sync and
async, alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import Instrumentor, inbound_problem, lane_baggage
from tidegate.agent.runtime import get_runtime
from tidegate.agent.stability import Stability
from tidegate.core import context
from tidegate.core.baggage import join_headers
from tidegate.core.governor import Entry
from tidegate.errors import BlockedError

if TYPE_CHECKING:
    from types import ModuleType

BAGGAGE = "baggage"
_BEHAVIOURS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def outgoing_metadata(metadata: Any) -> Any:
    """`metadata` with the current request's baggage merged in; unchanged when there is none."""
    current = context.current()
    if not current.lane and not current.baggage:
        return metadata
    pairs = list(metadata or ())
    existing = [value for key, value in pairs if key == BAGGAGE]
    if current.lane:
        value = lane_baggage(join_headers(existing) if existing else current.baggage, current.lane)
    elif existing:
        return metadata  # the call set its own baggage and we have no lane to add
    else:
        value = current.baggage
    return tuple((key, val) for key, val in pairs if key != BAGGAGE) + ((BAGGAGE, value),)


def incoming_context(metadata: Any) -> context.RequestContext:
    """The context a served call runs in, from its invocation metadata; never raises."""
    baggage: list[str] = []
    consumer = ""
    for key, value in metadata or ():
        if key == BAGGAGE and isinstance(value, str):
            baggage.append(value)
        elif key == context.CONSUMER_HEADER and isinstance(value, str):
            consumer = value
    if not baggage and not consumer:
        return context.EMPTY
    found = context.from_headers(join_headers(baggage), consumer)
    inbound_problem(found)
    return found


class _Within:
    """`with _Within(carried):` runs its block in the request context `carried`."""

    __slots__ = ("_carried", "_token")

    def __init__(self, carried: context.RequestContext) -> None:
        self._carried = carried

    def __enter__(self) -> None:
        self._token = context.enter(self._carried)

    def __exit__(self, *exc: object) -> None:
        context.leave(self._token)


def _in_context(carried: context.RequestContext, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """`behaviour` (a handler function of any of the four shapes, sync or async) run inside `carried`."""
    if inspect.isasyncgenfunction(behaviour):

        @functools.wraps(behaviour)
        async def async_stream(*args: Any) -> AsyncIterator[Any]:
            with _Within(carried):
                async for item in behaviour(*args):
                    yield item

        return async_stream
    if inspect.iscoroutinefunction(behaviour):

        @functools.wraps(behaviour)
        async def async_call(*args: Any) -> Any:
            with _Within(carried):
                return await behaviour(*args)

        return async_call
    if inspect.isgeneratorfunction(behaviour):

        @functools.wraps(behaviour)
        def stream(*args: Any) -> Iterator[Any]:
            with _Within(carried):
                yield from behaviour(*args)

        return stream

    @functools.wraps(behaviour)
    def call(*args: Any) -> Any:
        with _Within(carried):
            result = behaviour(*args)
        if inspect.isgenerator(result):  # a plain function returning a generator: iterate it in context too
            return _iterate_in(carried, result)
        return result

    return call


def _iterate_in(carried: context.RequestContext, items: Iterator[Any]) -> Iterator[Any]:
    with _Within(carried):
        yield from items


def _handler_in_context(handler: Any, metadata: Any) -> Any:
    if handler is None:
        return None
    carried = incoming_context(metadata)
    if carried is context.EMPTY:
        return handler
    return _with_behaviours(handler, lambda behaviour: _in_context(carried, behaviour))


def _with_behaviours(handler: Any, change: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    """`handler` with each of its behaviours (unary_unary, ...) replaced by `change(behaviour)`."""
    changes = {name: change(getattr(handler, name)) for name in _BEHAVIOURS if getattr(handler, name, None)}
    if hasattr(handler, "_replace"):
        return handler._replace(**changes)
    for name, behaviour in changes.items():  # a handler class of the app's own
        setattr(handler, name, behaviour)
    return handler


def _build_interceptors(grpc: Any) -> tuple[Any, list[Any], tuple[Any, Any]]:
    """(sync client interceptor, aio client interceptors, (sync, aio) server interceptors) for this grpc."""
    import collections

    aio: Any = grpc.aio

    class _CallDetails(
        collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails,
    ):
        pass

    def with_baggage(details: Any) -> Any:
        metadata = outgoing_metadata(details.metadata)
        if metadata is details.metadata:
            return details
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    class ClientInterceptor(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(with_baggage(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(with_baggage(details), request)

        def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(with_baggage(details), requests)

        def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(with_baggage(details), requests)

    def aio_details(details: Any) -> Any:
        given = tuple(details.metadata) if details.metadata is not None else ()
        metadata = outgoing_metadata(given)
        if metadata is given:
            return details
        return aio.ClientCallDetails(details.method, details.timeout, aio.Metadata(*metadata), details.credentials, details.wait_for_ready)

    async def aio_intercept(self: Any, continuation: Any, details: Any, request_or_iterator: Any) -> Any:
        return await continuation(aio_details(details), request_or_iterator)

    def aio_interceptor(shape: str) -> Any:
        """An aio client interceptor of `shape` ("UnaryUnary", ...): one class per shape, as grpc.aio asks."""
        base = getattr(aio, f"{shape}ClientInterceptor")
        method = "intercept_" + "".join(f"_{c.lower()}" if c.isupper() else c for c in shape).lstrip("_")
        return type(f"Aio{shape}", (base,), {method: aio_intercept})()

    class ServerInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            return governed(
                _handler_in_context(continuation(details), details.invocation_metadata),
                details.method,
                incoming_context(details.invocation_metadata).origin,
                grpc,
            )

    class AioServerInterceptor(aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            return governed(
                _handler_in_context(await continuation(details), details.invocation_metadata),
                details.method,
                incoming_context(details.invocation_metadata).origin,
                grpc,
            )

    aio_client = [aio_interceptor(shape) for shape in ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")]
    return ClientInterceptor(), aio_client, (ServerInterceptor(), AioServerInterceptor())


class GrpcInstrumentor(Instrumentor):
    library = "grpc"
    supported = ("grpcio >= 1.50",)

    def _patch(self, module: ModuleType) -> None:
        grpc = module
        client, aio_client, (server_interceptor, aio_server_interceptor) = _build_interceptors(grpc)

        def channel(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return grpc.intercept_channel(wrapped(*args, **kwargs), client)

        def interceptors_first(interceptors: list[Any], position: int) -> Callable[..., Any]:
            """A wrapper putting `interceptors` first in the `interceptors` argument (at `position` when positional)."""

            def make(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if len(args) > position:
                    given = list(args[position] or ())
                    args = (*args[:position], [*interceptors, *given], *args[position + 1 :])
                else:
                    kwargs = {**kwargs, "interceptors": [*interceptors, *(kwargs.get("interceptors") or ())]}
                return wrapped(*args, **kwargs)

            return make

        def serving(interceptors: list[Any]) -> Callable[..., Any]:
            """A server factory wrapper: interceptors first, and this process now serves
            requests, so its directory and rule watch start (gRPC has no other start hook)."""
            with_interceptors = interceptors_first(interceptors, 2)

            def make(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                server = with_interceptors(wrapped, instance, args, kwargs)
                lifecycle = self.runtime.lifecycle if self.runtime is not None else None
                if lifecycle is not None:
                    self.safely(lifecycle.serving_requests)
                return server

            return make

        self.wrap(grpc, "insecure_channel", channel)
        self.wrap(grpc, "secure_channel", channel)
        self.wrap(grpc, "server", serving([server_interceptor]))
        self.wrap(grpc.aio, "insecure_channel", interceptors_first(aio_client, 3))
        self.wrap(grpc.aio, "secure_channel", interceptors_first(aio_client, 4))
        self.wrap(grpc.aio, "server", serving([aio_server_interceptor]))


# -- stability: served methods governed -----------------------------------------------------------


def status_code(grpc: Any, error: BlockedError) -> Any:
    """RESOURCE_EXHAUSTED for limits, UNAVAILABLE for breakers and adaptive protection (HTTP 503)."""
    return grpc.StatusCode.UNAVAILABLE if error.http_status == 503 else grpc.StatusCode.RESOURCE_EXHAUSTED


def governed(handler: Any, method: str, origin: str, grpc: Any) -> Any:
    """`handler` with each of its behaviours run under the resource `method`; as it is without the agent."""
    runtime = get_runtime()
    stability = runtime.capability(Stability) if runtime is not None else None
    if handler is None or stability is None or not method:
        return handler
    return _with_behaviours(handler, lambda behaviour: _govern(stability, method, origin, grpc, behaviour))


def _govern(stability: Stability, resource: str, origin: str, grpc: Any, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def admit() -> Entry:
        stability.measure_saturation()
        return stability.enter(resource, origin=origin, inbound=True)

    def admit_on_loop() -> Entry:
        if stability.adaptive_in_force:
            stability.loop_lag.ensure()
        return admit()

    def refusal(error: BlockedError) -> tuple[Any, str]:
        return status_code(grpc, error), str(error)

    def admitted(servicer_context: Any) -> Entry:
        """The sync call's entry, after its throttling wait; a refusal aborts it (grpcio raises there)."""
        try:
            entry = admit()
        except BlockedError as error:
            servicer_context.abort(*refusal(error))
            raise
        _wait(entry)
        return entry

    if inspect.isasyncgenfunction(behaviour):

        @functools.wraps(behaviour)
        async def async_stream(request: Any, servicer_context: Any) -> AsyncIterator[Any]:
            try:
                entry = admit_on_loop()
            except BlockedError as error:
                await servicer_context.abort(*refusal(error))
                return
            await _wait_async(entry)
            failed = True
            try:
                async for item in behaviour(request, servicer_context):
                    yield item
                failed = False
            finally:
                stability.leave(entry, resource, failed)

        return async_stream
    if inspect.iscoroutinefunction(behaviour):

        @functools.wraps(behaviour)
        async def async_call(request: Any, servicer_context: Any) -> Any:
            try:
                entry = admit_on_loop()
            except BlockedError as error:
                await servicer_context.abort(*refusal(error))
                raise  # reached only if abort did not raise (it always does in grpcio)
            await _wait_async(entry)
            failed = True
            try:
                result = await behaviour(request, servicer_context)
                failed = False
                return result
            finally:
                stability.leave(entry, resource, failed)

        return async_call
    if inspect.isgeneratorfunction(behaviour):

        @functools.wraps(behaviour)
        def stream(request: Any, servicer_context: Any) -> Iterator[Any]:
            entry = admitted(servicer_context)
            failed = True
            try:
                yield from behaviour(request, servicer_context)
                failed = False
            finally:
                stability.leave(entry, resource, failed)

        return stream

    @functools.wraps(behaviour)
    def call(request: Any, servicer_context: Any) -> Any:
        entry = admitted(servicer_context)
        try:
            result = behaviour(request, servicer_context)
        except BaseException:
            stability.leave(entry, resource, True)
            raise
        if inspect.isgenerator(result):  # a plain function returning a stream: it ends when the stream does
            return _iterate(stability, entry, resource, result)
        stability.leave(entry, resource, False)
        return result

    return call


def _iterate(stability: Stability, entry: Entry, resource: str, items: Iterator[Any]) -> Iterator[Any]:
    failed = True
    try:
        yield from items
        failed = False
    finally:
        stability.leave(entry, resource, failed)


def _wait(entry: Entry) -> None:
    if entry.wait_s > 0.0:
        time.sleep(entry.wait_s)


async def _wait_async(entry: Entry) -> None:
    if entry.wait_s > 0.0:
        await asyncio.sleep(entry.wait_s)


INSTRUMENTOR = GrpcInstrumentor()
