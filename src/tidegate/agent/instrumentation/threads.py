"""Threads: the request context (lane, baggage) follows work handed to another thread.

A contextvar follows asyncio tasks on its own, but not threads:
`concurrent.futures.ThreadPoolExecutor.submit` (which `loop.run_in_executor`
uses) and `threading.Thread.start` run their callable in the new thread's
empty context. Both are patched to carry the submitting code's tidegate
context (only ours, not the whole `contextvars` context, which the caller
may not want shared). Every submitted task runs in its submitter's context,
the empty one included, so a pool thread started by one request never lends
that request's lane to the next task. `asyncio.to_thread` and Starlette's
background tasks already copy the context and need nothing.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.core import context


def _run_in(carried: context.RequestContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = context.enter(carried)
    try:
        return fn(*args, **kwargs)
    finally:
        context.leave(token)


class ThreadsInstrumentor(Instrumentor):
    library = "threading"

    def _patch(self, module: ModuleType) -> None:
        self.wrap(concurrent.futures.ThreadPoolExecutor, "submit", _submit)
        self.wrap(threading.Thread, "start", _start)


def _submit(wrapped: Callable[..., Any], executor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    fn, *rest = args
    return wrapped(functools.partial(_run_in, context.current(), fn), *rest, **kwargs)


def _start(wrapped: Callable[..., Any], thread: threading.Thread, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    carried = context.current()
    if carried is not context.EMPTY:
        thread.run = functools.partial(_run_in, carried, thread.run)  # type: ignore[method-assign]
    return wrapped(*args, **kwargs)


INSTRUMENTOR = ThreadsInstrumentor()
