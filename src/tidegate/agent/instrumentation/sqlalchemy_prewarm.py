"""SQLAlchemy prewarm: fill the pool of every engine the app created before it registers.

Engines are tracked from their construction (`Engine.__init__`, so
`create_engine`, `create_async_engine` and engines made by any helper are all
seen) in a weak set. `prewarm` checks out as many connections at once as the
pool's configured size, then returns them, so the pool holds `size()` open
connections when the instance registers. An async engine's connections belong
to the server's event loop, so they are opened there. This module only tracks
and fills pools; SQL governance is `sqlalchemy.py`'s.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime
    from tidegate.core.prewarm import PrewarmPlan

log = logging.getLogger("tidegate")

ASYNC_FILL_TIMEOUT_S = 30.0
ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


class SQLAlchemyPrewarmInstrumentor(InboundInstrumentor):
    library = "sqlalchemy"
    supported = "sqlalchemy >= 1.4"

    def _patch(self, module: ModuleType) -> None:
        from sqlalchemy.engine.base import Engine

        self.wrap(Engine, "__init__", _track)


def _track(wrapped: Any, engine: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    ENGINES.add(engine)
    return result


def _missing(pool: Any) -> int:
    """Connections to open so the pool holds its configured size (0 for pools without one)."""
    size = getattr(pool, "size", None)
    if not callable(size):
        return 0
    return max(0, int(size()) - int(pool.checkedin()) - int(pool.checkedout()))


def fill(engine: Any) -> int:
    """Open what a sync engine's pool lacks, all at once, then give it back; returns how many."""
    held = [engine.raw_connection() for _ in range(_missing(engine.pool))]
    for connection in held:
        connection.close()  # back to the pool, still open
    return len(held)


async def fill_async(engine: Any) -> int:
    """`fill` for an async engine (its sync core wrapped back), on the loop that will use it."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    facade = AsyncEngine(engine)
    held = []
    try:
        for _ in range(_missing(engine.pool)):
            connection = facade.connect()
            await connection.start()
            held.append(connection)
    finally:
        for connection in held:
            await connection.close()
    return len(held)


def prewarm(runtime: AgentRuntime, plan: PrewarmPlan, loop: asyncio.AbstractEventLoop | None) -> str:
    """Fill every tracked engine's pool; a summary for the log."""
    done = []
    for engine in list(ENGINES):
        name = repr(engine.url.render_as_string(hide_password=True))
        try:
            if getattr(engine.dialect, "is_async", False):
                if loop is None:
                    done.append(f"{name} skipped (async engine, no event loop to open its connections on)")
                    continue
                opened = asyncio.run_coroutine_threadsafe(fill_async(engine), loop).result(ASYNC_FILL_TIMEOUT_S)
            else:
                opened = fill(engine)
            done.append(f"{name} +{opened} (pool {engine.pool.checkedin()}/{engine.pool.size()})")
        except Exception as error:  # an unreachable database must not keep the app out of service
            log.warning("tidegate: prewarming the pool of %s failed: %s", name, error)
            done.append(f"{name} failed")
    return ", ".join(done) or "no engine"


INSTRUMENTOR = SQLAlchemyPrewarmInstrumentor()
