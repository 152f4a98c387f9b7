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
and under the method's stability rules (`governed`). What the metadata says of
the caller (its name, its lane) is believed as far as its peer is
(`tidegate.agent.trust`, as for HTTP): the peer is known only to the servicer
context, so that is decided when the handler runs, once per call, and the same
believed context is the one the handler runs in and the one admission counts.

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
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tidegate.agent import lanes, trust
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


def peer_host(peer: str) -> str:
    """The IP address in a gRPC peer (`ipv4:10.0.0.5:5678`, `ipv6:[::1]:5678`, percent-encoded as
    `ipv6:%5B::1%5D:5678` by newer grpcio); "" for any other (`unix:...`) or a malformed one: an
    unknown peer, believed only where every caller is (TIDEGATE_EDGE=off)."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    host = rest.rpartition(":")[0]
    if kind == "ipv6" and host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host if kind == "ipv4" else ""


class _Caller:
    """One served call's claims about its caller (`found`, from the metadata), and what of them is
    believed: asked when the handler runs (the servicer context knows the peer), worked out once."""

    __slots__ = ("_believed", "found")

    def __init__(self, found: context.RequestContext) -> None:
        self.found = found
        self._believed: context.RequestContext | None = None

    def believed(self, servicer_context: Any) -> context.RequestContext:
        believed = self._believed
        if believed is None:
            found = self.found
            if found is not context.EMPTY:
                try:
                    peer = peer_host(str(servicer_context.peer()))
                except Exception:  # a context of the app's own (a test double) with no peer: unknown
                    peer = ""
                found = trust.believed(found, peer, lanes.client_lanes())
            believed = self._believed = found
        return believed


def _caller_of(behaviour_args: tuple[Any, ...]) -> Any:
    """The servicer context among a behaviour's arguments (request or iterator, context)."""
    return behaviour_args[1] if len(behaviour_args) > 1 else None


class _Within:
    """`with _Within(caller, args):` runs its block in the context believed of `caller`
    (`args`: the behaviour's arguments, whose servicer context knows the peer)."""

    __slots__ = ("_args", "_caller", "_token")

    def __init__(self, caller: _Caller, args: tuple[Any, ...]) -> None:
        self._caller = caller
        self._args = args

    def __enter__(self) -> None:
        self._token = context.enter(self._caller.believed(_caller_of(self._args)))

    def __exit__(self, *exc: object) -> None:
        context.leave(self._token)


def _in_context(caller: _Caller, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """`behaviour` (a handler function of any of the four shapes, sync or async) run inside the
    context believed of `caller`."""
    if inspect.isasyncgenfunction(behaviour):

        @functools.wraps(behaviour)
        async def async_stream(*args: Any) -> AsyncIterator[Any]:
            with _Within(caller, args):
                async for item in behaviour(*args):
                    yield item

        return async_stream
    if inspect.iscoroutinefunction(behaviour):

        @functools.wraps(behaviour)
        async def async_call(*args: Any) -> Any:
            with _Within(caller, args):
                return await behaviour(*args)

        return async_call
    if inspect.isgeneratorfunction(behaviour):

        @functools.wraps(behaviour)
        def stream(*args: Any) -> Iterator[Any]:
            with _Within(caller, args):
                yield from behaviour(*args)

        return stream

    @functools.wraps(behaviour)
    def call(*args: Any) -> Any:
        with _Within(caller, args):
            result = behaviour(*args)
        if inspect.isgenerator(result):  # a plain function returning a generator: iterate it in context too
            return _iterate_in(caller, args, result)
        return result

    return call


def _iterate_in(caller: _Caller, args: tuple[Any, ...], items: Iterator[Any]) -> Iterator[Any]:
    with _Within(caller, args):
        yield from items


def _handler_in_context(handler: Any, caller: _Caller) -> Any:
    if handler is None or caller.found is context.EMPTY:
        return handler
    return _with_behaviours(handler, lambda behaviour: _in_context(caller, behaviour))


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
            caller = _Caller(incoming_context(details.invocation_metadata))
            return governed(_handler_in_context(continuation(details), caller), details.method, caller, grpc)

    class AioServerInterceptor(aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            caller = _Caller(incoming_context(details.invocation_metadata))
            return governed(_handler_in_context(await continuation(details), caller), details.method, caller, grpc)

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


def governed(handler: Any, method: str, caller: _Caller, grpc: Any) -> Any:
    """`handler` with each of its behaviours run under the resource `method`, the origin counted
    the one believed of `caller`; as it is without the agent."""
    runtime = get_runtime()
    stability = runtime.capability(Stability) if runtime is not None else None
    if handler is None or stability is None or not method:
        return handler
    return _with_behaviours(handler, lambda behaviour: _govern(stability, method, caller, grpc, behaviour))


def _govern(stability: Stability, resource: str, caller: _Caller, grpc: Any, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def admit(servicer_context: Any) -> Entry:
        stability.measure_saturation()
        return stability.enter(resource, origin=caller.believed(servicer_context).origin, inbound=True)

    def admit_on_loop(servicer_context: Any) -> Entry:
        if stability.adaptive_in_force:
            stability.loop_lag.ensure()
        return admit(servicer_context)

    def refusal(error: BlockedError) -> tuple[Any, str]:
        return status_code(grpc, error), str(error)

    def admitted(servicer_context: Any) -> Entry:
        """The sync call's entry, after its throttling wait; a refusal aborts it (grpcio raises there)."""
        try:
            entry = admit(servicer_context)
        except BlockedError as error:
            servicer_context.abort(*refusal(error))
            raise
        _wait(entry)
        return entry

    if inspect.isasyncgenfunction(behaviour):

        @functools.wraps(behaviour)
        async def async_stream(request: Any, servicer_context: Any) -> AsyncIterator[Any]:
            try:
                entry = admit_on_loop(servicer_context)
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
                entry = admit_on_loop(servicer_context)
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
