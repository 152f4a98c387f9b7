"""SQLAlchemy (sync and async engines): every statement is governed as `sql:<template>`.

Listeners on the `Engine` class (which every engine, and every AsyncEngine's
`sync_engine`, dispatches to) bracket each cursor execution:
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
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor
from tidegate.agent.stability import Stability
from tidegate.core.sql import template

_ENTRY = "_tidegate_sql_entry"


class SQLAlchemyInstrumentor(InboundInstrumentor):
    library = "sqlalchemy"
    supported = "sqlalchemy >= 2.0"
    hook_module = "sqlalchemy.engine"

    def _patch(self, module: ModuleType) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        event.listen(Engine, "handle_error", self._error)

    def uninstrument(self) -> None:
        if self._patched:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            for name, listener in (
                ("before_cursor_execute", self._before),
                ("after_cursor_execute", self._after),
                ("handle_error", self._error),
            ):
                if event.contains(Engine, name, listener):
                    event.remove(Engine, name, listener)
        super().uninstrument()

    def _stability(self) -> Stability | None:
        runtime = self.runtime
        return runtime.capability(Stability) if runtime is not None else None

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        stability = self._stability()
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
        stability = self._stability()
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


INSTRUMENTOR = SQLAlchemyInstrumentor()
