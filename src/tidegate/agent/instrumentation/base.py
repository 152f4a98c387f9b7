"""The one instrumentor base, after OpenTelemetry's `BaseInstrumentor`: what every patched library's module shares.

An `Instrumentor` names its library (`library`, the import name) and the
distributions it supports (`supported`: requirement strings, with an upper
bound wherever a private API is patched), and patches in `_patch(module)`
with `wrap` (a `wrapt` function wrapper, recorded so `uninstrument` puts the
original back). `instrument(runtime)` is idempotent: it patches once, the
moment the library (or `hook_module`) is imported, or at once when it already
is (a wrapt post-import hook), so booting never imports a library the program
does not use; a second call only swaps the runtime. A patch that fails is
logged and undone; the library then runs unpatched.

`HttpClientInstrumentor` adds what httpx, requests and aiohttp share: the
process's one `OutboundPipeline` (taken at `instrument`, so a call does no
registry lookup) and the `baggage` a call carries.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import wrapt

from tidegate.agent.offline import LosslessOffline
from tidegate.agent.online import LosslessOnline
from tidegate.agent.outbound.call import OutboundPipeline
from tidegate.agent.stability import Stability
from tidegate.core import context

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")

#: `name >= 1.2, < 3`: the forms understood without `packaging` (which is not a dependency).
_SIMPLE_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*((?:>=|<)\s*[0-9][0-9.]*(?:\s*,\s*(?:>=|<)\s*[0-9][0-9.]*)*)\s*$")


def _release_tuple(version: str) -> tuple[int, ...]:
    numbers = re.match(r"[0-9]+(?:\.[0-9]+)*", version)
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else ()


def installed_version_meets(requirement: str) -> bool:
    """Whether the installed distribution satisfies `requirement` ("httpx >= 0.23, < 1"); False when not installed.

    Uses `packaging` when it is installed; otherwise understands the forms the
    instrumentors declare, `name >= version` with optional `, < version`.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:
        simple = _SIMPLE_REQUIREMENT.match(requirement)
        if simple is None:
            raise ValueError(f"requirement {requirement!r}: expected 'name >= version' (optionally ', < version')") from None
        name, clauses = simple.groups()
        try:
            installed = _release_tuple(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            return False
        for clause in clauses.split(","):
            operator, bound = clause.strip()[:2].strip(), _release_tuple(clause.strip().lstrip("<>=").strip())
            if (operator == ">=" and installed < bound) or (operator == "<" and installed >= bound):
                return False
        return True
    parsed = Requirement(requirement)
    try:
        installed_text = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(installed_text, prereleases=True)


#: A wrapt wrapper: `wrapper(wrapped, instance, args, kwargs)`.
Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


class Instrumentor:
    """Base of every instrumentor; a subclass sets `library` and `supported` and implements `_patch`."""

    #: The import name of the library (what `importlib.util.find_spec` looks for).
    library: str = ""
    #: Requirements every one of which the installed distributions must meet ("httpx >= 0.23, < 1").
    supported: tuple[str, ...] = ()
    #: The module whose import triggers the patch (default `library`), for libraries whose
    #: top-level import does not load what is patched.
    hook_module: str = ""

    def __init__(self) -> None:
        self.runtime: AgentRuntime | None = None
        self._hooked = False
        self._patched = False
        self._patches: list[tuple[Any, str, Any]] = []
        #: True once a patch failed (logged, and undone): the library runs unpatched.
        self.failed = False

    # -- the version gate ---------------------------------------------------------------------

    def installed(self) -> bool:
        return importlib.util.find_spec(self.library) is not None

    def unsupported(self) -> str | None:
        """The first requirement of `supported` the installed versions do not meet, or None."""
        return next((requirement for requirement in self.supported if not installed_version_meets(requirement)), None)

    def available(self) -> bool:
        """True when the library is installed in a supported version."""
        return self.installed() and self.unsupported() is None

    # -- applying and removing ----------------------------------------------------------------

    def instrument(self, runtime: AgentRuntime) -> None:
        """Patch the library now if it is imported, else when it is; a second call only swaps the runtime."""
        self.runtime = runtime
        self._instrumented(runtime)
        if self._patched:
            return
        name = self.hook_module or self.library
        if not self._hooked:
            self._hooked = True
            wrapt.register_post_import_hook(self._on_import, name)  # runs at once when it is imported already
        elif name in sys.modules:  # instrumented again after `uninstrument`
            self._on_import(sys.modules[name])

    def uninstrument(self) -> None:
        """Put every original back (a patch not applied yet never will be, until `instrument` again)."""
        if self._patched:
            self._unpatch()
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()
        self._patched = False
        self.runtime = None

    def wrap(self, owner: Any, name: str, wrapper: Wrapper) -> None:
        """Replace `owner.name` with a wrapt function wrapper calling `wrapper(wrapped, instance, args, kwargs)`."""
        original = owner.__dict__[name]
        self._patches.append((owner, name, original))
        wrapt.wrap_function_wrapper(owner, name, wrapper)

    def safely(self, action: Callable[..., Any], *args: Any) -> None:
        """Run an agent step inside the library's own code path; a failure is logged, never raised."""
        try:
            action(*args)
        except Exception:  # the program must run on whatever the agent's step did
            log.exception("tidegate: %s failed in %s; the program runs on", getattr(action, "__name__", action), self.library)

    # -- what a subclass implements -----------------------------------------------------------

    def _patch(self, module: ModuleType) -> None:
        """Patch the library (`module`: the hook module, just imported)."""
        raise NotImplementedError

    def _unpatch(self) -> None:
        """Undo what `_patch` did other than `wrap` (event listeners, signal receivers)."""

    def _instrumented(self, runtime: AgentRuntime) -> None:
        """Every `instrument(runtime)` call: take from `runtime` what the patches need (before any patch)."""

    def _on_import(self, module: ModuleType) -> None:
        if self.runtime is None or self._patched:
            return
        self._patched = True
        try:
            self._patch(module)
        except Exception:  # one failing patch must never break the program
            log.exception("tidegate: patch failed: %s runs unpatched", self.library)
            self.failed = True
            self.uninstrument()


def outbound_pipeline(runtime: AgentRuntime) -> OutboundPipeline | None:
    """The process's one outbound call pipeline, built the first time (at boot) from the runtime's
    router, stability's admission, lossless offline's drain notices, lossless online's called
    services and the metrics; None when the agent has no router (calls go out untouched)."""
    pipeline = runtime.capability(OutboundPipeline)
    if pipeline is not None or runtime.router is None:
        return pipeline
    offline = runtime.capability(LosslessOffline)
    online = runtime.capability(LosslessOnline)
    return runtime.add(
        OutboundPipeline(
            runtime.router,
            admission=runtime.capability(Stability),
            drains=offline.notices if offline is not None else None,
            observer=runtime.metrics,
            consumer=lambda: runtime.consumer,
            clock=runtime.clock,
            on_first_call=online.called.add if online is not None and online.called is not None else None,
        )
    )


class HttpClientInstrumentor(Instrumentor):
    """Base of the HTTP client instrumentors: the pipeline their calls go through, and the baggage they carry."""

    def __init__(self) -> None:
        super().__init__()
        #: The process's outbound pipeline (None: calls to service names go out untouched).
        self.pipeline: OutboundPipeline | None = None

    def _instrumented(self, runtime: AgentRuntime) -> None:
        self.pipeline = outbound_pipeline(runtime)

    def uninstrument(self) -> None:
        super().uninstrument()
        self.pipeline = None


def baggage(current: context.RequestContext, existing: str | None) -> str | None:
    """The `baggage` value a call made in `current` carries, or None to leave the call's own as it is."""
    if current.lane:
        return lane_baggage(existing if existing is not None else current.baggage, current.lane)
    if current.baggage and existing is None:
        return current.baggage
    return None


def lane_baggage(header: str, lane: str) -> str:
    """`header` with the lane set, sendable by every library; what had to be dropped is logged once."""
    edited, problem = context.lane_edit(header, lane)
    if problem:
        warn_once("baggage", f"tidegate: outbound baggage: {problem}")
    return edited


def inbound_problem(found: context.RequestContext) -> None:
    """Log, once per process, why an inbound request's tidegate headers were partly ignored."""
    if found.problem:
        warn_once("inbound", f"tidegate: inbound headers: {found.problem} (further ones are not logged)")


_warned: set[str] = set()


def warn_once(topic: str, message: str) -> None:
    """Log `message` the first time `topic` has something to say in this process; later ones at debug."""
    if topic in _warned:
        log.debug(message)
        return
    _warned.add(topic)
    log.warning(message)
