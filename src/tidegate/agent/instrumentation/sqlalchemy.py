"""SQLAlchemy (sync and async engines): every statement is governed as `sql:<template>`, and pools are prewarmed.

Stability: listeners on the `Engine` class (which every engine, and every
AsyncEngine's `sync_engine`, dispatches to) bracket each cursor execution:
  - `before_cursor_execute`: the statement's template (`tidegate.core.sql`)
    names the resource; a refused statement raises its `BlockedError` there,
    before the statement is sent to the database (SQLAlchemy passes it through
    unwrapped, so `except tidegate.BlockedError` catches it); a throttled one
    waits (on the event loop for async engines, without blocking it);
  - `after_cursor_execute`: the RT goes to the statistics and slow-SQL breakers;
  - `handle_error`: the statement failed (an error for error-ratio breakers).
Calls made while serving an inbound request count under it as their entrance
(chain rules). Flow, concurrency and breaker rules name the resource as
`sql:select * from orders where id = ?`.

Lossless online's prewarm step: engines are tracked from their construction
(`Engine.__init__`, so `create_engine`, `create_async_engine` and engines made
by any helper are all seen) in a weak set; the step checks out as many
connections at once as the pool's configured size, then returns them, so the
pool holds `size()` open connections when the instance registers. An async
engine's connections belong to the server's event loop, so they are opened there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.online import LosslessOnline
from tidegate.agent.stability import Stability
from tidegate.core.sql import template

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime
    from tidegate.core.prewarm import PrewarmPlan

log = logging.getLogger("tidegate")

_ENTRY = "_tidegate_sql_entry"
ASYNC_FILL_TIMEOUT_S = 30.0
ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


class SQLAlchemyInstrumentor(Instrumentor):
    library = "sqlalchemy"
    # The throttling wait of an async engine's statement uses sqlalchemy.util.concurrency (private).
    supported = ("sqlalchemy >= 1.4.41, < 3",)
    hook_module = "sqlalchemy.engine"

    def __init__(self) -> None:
        super().__init__()
        self._stability: Stability | None = None

    def _instrumented(self, runtime: AgentRuntime) -> None:
        self._stability = runtime.capability(Stability)
        online = runtime.capability(LosslessOnline)
        if online is not None:
            online.prewarm.add_step("sqlalchemy", prewarm)

    def _patch(self, module: ModuleType) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.wrap(Engine, "__init__", _track)
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        event.listen(Engine, "handle_error", self._error)

    def _unpatch(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, listener in (
            ("before_cursor_execute", self._before),
            ("after_cursor_execute", self._after),
            ("handle_error", self._error),
        ):
            if event.contains(Engine, name, listener):
                event.remove(Engine, name, listener)

    def uninstrument(self) -> None:
        super().uninstrument()
        self._stability = None

    # -- stability --------------------------------------------------------------------------------

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        stability = self._stability
        if stability is None or context is None:
            return
        resource = "sql:" + template(statement)
        # Every template is entered, rule or not: the metrics list the templates in
        # use, which is how a user finds the one to write a rule for.
        entry = stability.enter(resource)  # a refusal raises BlockedError before the statement is sent
        setattr(context, _ENTRY, (entry, resource))
        if entry.wait_s > 0.0:
            _wait(entry.wait_s)

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        self._end(context, False)

    def _error(self, exception_context: Any) -> None:
        self._end(exception_context.execution_context, True)

    def _end(self, context: Any, error: bool) -> None:
        held = getattr(context, _ENTRY, None) if context is not None else None
        if held is None:
            return
        setattr(context, _ENTRY, None)
        stability = self._stability
        if stability is not None:
            entry, resource = held
            stability.leave(entry, resource, error)


def _wait(seconds: float) -> None:
    """Sleep `seconds`; inside an AsyncEngine's call, on the event loop (it must not block)."""
    from sqlalchemy.util import concurrency

    await_ = getattr(concurrency, "await_", None) or concurrency.await_only
    if concurrency.in_greenlet():
        await_(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


# -- lossless online: prewarm ---------------------------------------------------------------------


def _track(wrapped: Any, engine: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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


def prewarm(plan: PrewarmPlan, loop: asyncio.AbstractEventLoop | None) -> str:
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


INSTRUMENTOR = SQLAlchemyInstrumentor()
