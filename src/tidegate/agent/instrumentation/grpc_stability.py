"""gRPC servers: every served method is a stability resource, refused before its handler runs.

The gRPC server interceptors (grpc.py) pass each handler through `governed`:
the resource is the full method name (`/shop.Orders/Get`), the origin the
calling service from `x-tidegate-consumer` metadata. A refused call is
aborted with RESOURCE_EXHAUSTED (flow, hot-spot) or UNAVAILABLE (breaker,
adaptive) and the refusal's message; an admitted call that raises counts as an
error for the breakers. Unary and streaming handlers, sync and async, alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tidegate.agent.runtime import get_runtime
from tidegate.agent.stability import Stability
from tidegate.core.governor import Entry
from tidegate.errors import BlockedError

_BEHAVIOURS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def status_code(grpc: Any, error: BlockedError) -> Any:
    """RESOURCE_EXHAUSTED for limits, UNAVAILABLE for breakers and adaptive protection (HTTP 503)."""
    return grpc.StatusCode.UNAVAILABLE if error.http_status == 503 else grpc.StatusCode.RESOURCE_EXHAUSTED


def governed(handler: Any, method: str, origin: str, grpc: Any) -> Any:
    """`handler` with each of its behaviours run under the resource `method`; as it is without the agent."""
    runtime = get_runtime()
    stability = runtime.capability(Stability) if runtime is not None else None
    if handler is None or stability is None or not method:
        return handler
    changes = {
        name: _govern(stability, method, origin, grpc, getattr(handler, name)) for name in _BEHAVIOURS if getattr(handler, name, None)
    }
    if hasattr(handler, "_replace"):
        return handler._replace(**changes)
    for name, behaviour in changes.items():  # a handler class of the app's own
        setattr(handler, name, behaviour)
    return handler


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
            try:
                entry = admit()
            except BlockedError as error:
                servicer_context.abort(*refusal(error))
                raise
            _wait(entry)
            failed = True
            try:
                yield from behaviour(request, servicer_context)
                failed = False
            finally:
                stability.leave(entry, resource, failed)

        return stream

    @functools.wraps(behaviour)
    def call(request: Any, servicer_context: Any) -> Any:
        try:
            entry = admit()
        except BlockedError as error:
            servicer_context.abort(*refusal(error))
            raise
        _wait(entry)
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
