"""redis-py prewarm: open connections in every connection pool the app created before it registers.

Pools are tracked from their construction (sync `redis.ConnectionPool` and
its subclasses, and `redis.asyncio.ConnectionPool`) in weak sets. `prewarm`
checks out `TIDEGATE_PREWARM_REDIS_CONNECTIONS` connections (default 2, at
most the pool's `max_connections`) at once, each connected and PINGed, then
releases them. Async pools are filled on the server's event loop, whose
connections they are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime
    from tidegate.core.prewarm import PrewarmPlan

log = logging.getLogger("tidegate")

DEFAULT_CONNECTIONS = 2
ASYNC_FILL_TIMEOUT_S = 30.0
SYNC_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()
ASYNC_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


class RedisPrewarmInstrumentor(InboundInstrumentor):
    library = "redis"
    supported = "redis >= 4.2"

    def _patch(self, module: ModuleType) -> None:
        from redis.asyncio.connection import ConnectionPool as AsyncPool
        from redis.connection import ConnectionPool

        self.wrap(ConnectionPool, "__init__", _tracker(SYNC_POOLS))
        self.wrap(AsyncPool, "__init__", _tracker(ASYNC_POOLS))


def _tracker(into: weakref.WeakSet[Any]) -> Any:
    def track(wrapped: Any, pool: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        into.add(pool)
        return result

    return track


def connections_wanted(pool: Any) -> int:
    text = os.environ.get("TIDEGATE_PREWARM_REDIS_CONNECTIONS", "").strip()
    wanted = int(text) if text.isdigit() else DEFAULT_CONNECTIONS
    maximum = getattr(pool, "max_connections", None)
    return min(wanted, maximum) if isinstance(maximum, int) and maximum > 0 else wanted


def fill(pool: Any) -> int:
    held = []
    try:
        for _ in range(connections_wanted(pool)):
            connection = pool.get_connection("PING")
            held.append(connection)
            connection.send_command("PING")
            connection.read_response()
    finally:
        for connection in held:
            pool.release(connection)
    return len(held)


async def fill_async(pool: Any) -> int:
    held = []
    try:
        for _ in range(connections_wanted(pool)):
            connection = await pool.get_connection("PING")
            held.append(connection)
            await connection.send_command("PING")
            await connection.read_response()
    finally:
        for connection in held:
            await pool.release(connection)
    return len(held)


def prewarm(runtime: AgentRuntime, plan: PrewarmPlan, loop: asyncio.AbstractEventLoop | None) -> str:
    opened = 0
    pools = 0
    for pool in list(SYNC_POOLS):
        pools += 1
        try:
            opened += fill(pool)
        except Exception as error:
            log.warning("tidegate: prewarming redis pool %r failed: %s", pool, error)
    for pool in list(ASYNC_POOLS):
        pools += 1
        if loop is None:
            continue
        try:
            opened += asyncio.run_coroutine_threadsafe(fill_async(pool), loop).result(ASYNC_FILL_TIMEOUT_S)
        except Exception as error:
            log.warning("tidegate: prewarming redis pool %r failed: %s", pool, error)
    return f"{opened} connection(s) in {pools} pool(s)" if pools else "no pool"


INSTRUMENTOR = RedisPrewarmInstrumentor()
