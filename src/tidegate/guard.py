"""`tidegate.guard("name")`: govern any block of code or function as a named resource.

    with tidegate.guard("pricing"):            # sync context manager
        ...
    async with tidegate.guard("pricing"):      # async context manager
        ...
    @tidegate.guard("pricing", fallback=lambda error: DEFAULT_PRICE)
    def price(item): ...                       # decorator (sync or async function)

Entering admits the call under the rules naming the resource (flow, hot-spot
with `args`, breakers), or raises the refusing `BlockedError` subclass; a
throttling rule's queueing wait is slept first (awaited in the async forms).
Leaving records the RT, and an exception as an error for the breakers. A
decorated function with a `fallback` returns `fallback(error)` instead of
raising when refused (only refusals: the function's own exceptions propagate).

Under the agent the process's Governor is used (rules pushed from the control
plane, per-resource metrics, events); without it, a Governor of this process
whose rules are put in force with
`tidegate.guard.local_governor().load(...)` (or `load_documents`), or pass
`governor=` explicitly. Calls made while serving an inbound request count it
as their entrance (chain rules). A `Guard` object brackets one `with` at a
time; the decorator brackets each call on its own.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from tidegate.agent.runtime import get_runtime
from tidegate.agent.stability import Stability, entrance
from tidegate.core.governor import Entry, Governor
from tidegate.errors import BlockedError

F = TypeVar("F", bound=Callable[..., Any])
Fallback = Callable[[BlockedError], Any]

_local_governor = Governor()


def local_governor() -> Governor:
    """The Governor guards use when the agent is not loaded (put rules in force with its `load`)."""
    return _local_governor


def load_documents(documents: Any) -> None:
    """Compile stability rule documents and put them in force in `local_governor()` (RuleError: none are)."""
    from tidegate.rules.stability import compile_rules

    _local_governor.load(compile_rules(documents))


class _Refused:
    """A decorated call that was refused, and what its fallback answered instead."""

    __slots__ = ("answer",)

    def __init__(self, answer: Any) -> None:
        self.answer = answer


class Guard:
    """One guarded resource: a context manager (sync and async) and a decorator."""

    def __init__(
        self,
        name: str,
        *,
        fallback: Fallback | None = None,
        args: Mapping[str, str] | None = None,
        governor: Governor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("tidegate.guard needs a non-empty resource name")
        self.name = name
        self.fallback = fallback
        self.args = args
        self._governor = governor
        self._clock = clock
        self._held: tuple[Stability | None, Entry] | None = None

    # -- one bracket -------------------------------------------------------------------

    def _enter(self) -> tuple[Stability | None, Entry]:
        runtime = get_runtime() if self._governor is None else None
        stability = runtime.capability(Stability) if runtime is not None else None
        if stability is not None:
            return stability, stability.enter(self.name, args=self.args)
        gov = self._governor or _local_governor
        return None, gov.entry(self.name, self._clock(), context=entrance(), args=self.args)

    def _admit(self) -> tuple[Stability | None, Entry] | _Refused:
        """`_enter` for the decorator: a refusal is the fallback's answer, or raises when there is no fallback."""
        try:
            return self._enter()
        except BlockedError as error:
            if self.fallback is None:
                raise
            return _Refused(self.fallback(error))

    def _exit(self, held: tuple[Stability | None, Entry], error: bool) -> None:
        stability, entry = held
        if stability is not None:
            stability.leave(entry, self.name, error)
        else:
            entry.exit(self._clock(), error)

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> Guard:
        held = self._enter()
        if held[1].wait_s > 0.0:
            time.sleep(held[1].wait_s)
        self._held = held
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._exit(held, kind is not None)

    async def __aenter__(self) -> Guard:
        held = self._enter()
        if held[1].wait_s > 0.0:
            await asyncio.sleep(held[1].wait_s)
        self._held = held
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.__exit__(kind, value, tb)

    # -- decorator ---------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                held = self._admit()
                if isinstance(held, _Refused):
                    return held.answer
                if held[1].wait_s > 0.0:
                    await asyncio.sleep(held[1].wait_s)
                failed = True
                try:
                    result = await function(*args, **kwargs)
                    failed = False
                    return result
                finally:
                    self._exit(held, failed)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            held = self._admit()
            if isinstance(held, _Refused):
                return held.answer
            if held[1].wait_s > 0.0:
                time.sleep(held[1].wait_s)
            failed = True
            try:
                result = function(*args, **kwargs)
                failed = False
                return result
            finally:
                self._exit(held, failed)

        return guarded  # type: ignore[return-value]


def guard(
    name: str,
    *,
    fallback: Fallback | None = None,
    args: Mapping[str, str] | None = None,
    governor: Governor | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Guard:
    """Govern a block or a function as the resource `name` (see the module docstring)."""
    return Guard(name, fallback=fallback, args=args, governor=governor, clock=clock)
