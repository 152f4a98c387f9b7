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
from typing import TYPE_CHECKING, Any

from tidegate.core import context

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime


def _run_in(carried: context.RequestContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = context.enter(carried)
    try:
        return fn(*args, **kwargs)
    finally:
        context.leave(token)


class ThreadsInstrumentor:
    library = "threading"
    supported = ""

    def __init__(self) -> None:
        self._original_submit: Callable[..., Any] | None = None
        self._original_start: Callable[..., Any] | None = None

    def available(self) -> bool:
        return True

    def instrument(self, runtime: AgentRuntime) -> None:
        if self._original_submit is not None:
            return
        self._original_submit = original_submit = concurrent.futures.ThreadPoolExecutor.submit
        self._original_start = original_start = threading.Thread.start

        @functools.wraps(original_submit)
        def submit(executor: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            return original_submit(executor, functools.partial(_run_in, context.current(), fn), *args, **kwargs)

        @functools.wraps(original_start)
        def start(thread: threading.Thread) -> None:
            carried = context.current()
            if carried is not context.EMPTY:
                thread.run = functools.partial(_run_in, carried, thread.run)  # type: ignore[method-assign]
            original_start(thread)

        concurrent.futures.ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]
        threading.Thread.start = start  # type: ignore[method-assign]

    def uninstrument(self) -> None:
        if self._original_submit is not None:
            concurrent.futures.ThreadPoolExecutor.submit = self._original_submit  # type: ignore[method-assign]
            threading.Thread.start = self._original_start  # type: ignore[method-assign]
            self._original_submit = self._original_start = None


INSTRUMENTOR = ThreadsInstrumentor()
