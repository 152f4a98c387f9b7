"""The attempt loop over an `OutboundCall`, once for sync clients and once for async ones.

An adapter begins the call (`OutboundPipeline.begin`), answers a refusal with
the fallback, and hands the rest to `drive` (or `drive_async`) with three
functions of its own library: `send(route)` aims the request at the route's
instance and sends it, `outcome(response)` reads its status and
`x-tidegate-draining` header, and `classify(error)` says what an exception
of the library means (`ErrorKind`, or the status of a response the library
raised on). The loop waits out a throttling queue, retries where the call
says so, re-raises the library's own error otherwise, and finishes the call
exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tidegate.agent.outbound.call import ErrorKind, OutboundCall
from tidegate.agent.runtime import Route

R = TypeVar("R")

#: What an attempt's exception means: its kind, or the status of a response the library raised on
#: (aiohttp's `raise_for_status`: the instance did answer; never retried).
Classify = Callable[[Exception], "ErrorKind | int"]
#: (status, x-tidegate-draining header) of a response.
Outcome = Callable[[R], tuple[int, "str | None"]]


def _failed(call: OutboundCall, classified: ErrorKind | int) -> bool:
    if isinstance(classified, ErrorKind):
        return call.failed(classified)
    return call.failed(ErrorKind.OTHER, status=classified)


def drive(call: OutboundCall, send: Callable[[Route], R], outcome: Outcome[R], classify: Classify) -> R:
    """Run `call`'s attempts through `send` until one answers or the call gives up (the error is raised)."""
    try:
        if call.wait_s:
            time.sleep(call.wait_s)
        while True:
            route = call.attempt()
            try:
                response = send(route)
            except Exception as error:
                if not _failed(call, classify(error)):
                    raise
            else:
                call.answered(*outcome(response))
                return response
    finally:
        call.finish()


async def drive_async(call: OutboundCall, send: Callable[[Route], Awaitable[R]], outcome: Outcome[R], classify: Classify) -> R:
    """`drive` for async clients: the wait and the sends are awaited."""
    try:
        if call.wait_s:
            await asyncio.sleep(call.wait_s)
        while True:
            route = call.attempt()
            try:
                response = await send(route)
            except Exception as error:
                if not _failed(call, classify(error)):
                    raise
            else:
                call.answered(*outcome(response))
                return response
    finally:
        call.finish()
