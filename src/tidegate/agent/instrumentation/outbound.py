"""What the HTTP client instrumentors (httpx, requests, aiohttp) share.

Each of them patches its library's send method to ask the runtime's
`OutboundRouter` where a call to a service name goes, send it there, and end
the route when the response arrives. This module holds the version check,
the patch bookkeeping and the bracket around one attempt (route, metrics,
release), so each library's module only translates its own URL and errors.

Choices made here, the same for every library:
  - the URL is rewritten to the instance's address and the Host header names
    that address too (an HTTP/1.1 server behind the name sees the address it
    listens on, as with client-side load balancing in Spring Cloud);
  - a call whose connection failed before the request was written (refused,
    connect timeout) is retried on another instance, up to `CONNECT_ATTEMPTS`
    instances in all, since nothing reached the server;
  - an attempt is ok when a response came back with a status below 500;
  - a call to a service is the stability resource `http://<service>` (once per
    call, retries included): a refused call raises the BlockedError subclass
    that is also the library's own error (`blocked_base`), or returns the
    fallback set with `Stability.set_outbound_fallback`;
  - every call (to a service name or not) carries the request's lane in W3C
    `baggage`, merged into a baggage header the caller set; calls to a service
    name also say who calls (`x-tidegate-consumer`), see `tidegate.core.context`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.agent.offline import LosslessOffline, pools
from tidegate.agent.stability import Stability
from tidegate.core import context
from tidegate.errors import BlockedError, NoInstanceError

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime, Route, Router
    from tidegate.core.governor import Entry
    from tidegate.core.instance import Instance

log = logging.getLogger("tidegate.agent")

#: Instances one call may try when connecting fails before anything was sent.
CONNECT_ATTEMPTS = 3

_SIMPLE_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)\s*$")


def _release_tuple(version: str) -> tuple[int, ...]:
    numbers = re.match(r"[0-9]+(?:\.[0-9]+)*", version)
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else ()


def installed_version_meets(requirement: str) -> bool:
    """Whether the installed distribution satisfies `requirement` ("httpx >= 0.23").

    Uses `packaging` when it is installed; otherwise understands the one
    form the instrumentors declare, `name >= version`.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:
        simple = _SIMPLE_REQUIREMENT.match(requirement)
        if simple is None:
            raise ValueError(f"requirement {requirement!r}: expected 'name >= version'") from None
        name, minimum = simple.groups()
        try:
            return _release_tuple(importlib.metadata.version(name)) >= _release_tuple(minimum)
        except importlib.metadata.PackageNotFoundError:
            return False
    parsed = Requirement(requirement)
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(installed, prereleases=True)


def netloc(instance: Instance) -> str:
    """`host:port` of an instance, with an IPv6 host in brackets."""
    host = f"[{instance.host}]" if ":" in instance.host else instance.host
    return f"{host}:{instance.port}"


class OutboundInstrumentor:
    """Base of the HTTP client instrumentors: version gate, patch bookkeeping, one attempt's bracket.

    A subclass sets `library` and `supported` and implements `_patch` and
    `_unpatch`; its wrappers call `self.router().route(...)`, then
    `finish(route, ok, started)` in a `finally`, and `retry_route` when the
    connection failed before the request was sent.
    """

    library: str = ""
    supported: str = ""
    #: The library's own error class ("module.Class") a refused call's BlockedError also is.
    blocked_base: str = ""

    def __init__(self) -> None:
        self.runtime: AgentRuntime | None = None

    def available(self) -> bool:
        """True when the library is importable and its version is supported; logs why not."""
        if importlib.util.find_spec(self.library) is None:
            return False
        if not installed_version_meets(self.supported):
            log.info("tidegate: %s is installed in an unsupported version (needs %s); not patched", self.library, self.supported)
            return False
        return True

    def instrument(self, runtime: AgentRuntime) -> None:
        """Patch the library so that calls to service names are routed; a second call only swaps the runtime."""
        first = self.runtime is None
        self.runtime = runtime
        if first:
            self._patch()

    def uninstrument(self) -> None:
        """Put the library's original methods back."""
        if self.runtime is not None:
            self._unpatch()
            self.runtime = None

    def router(self) -> Router | None:
        """The router calls go through, or None when the agent has none (calls go out untouched)."""
        runtime = self.runtime
        return runtime.router if runtime is not None else None

    def baggage(self, existing: str | None) -> str | None:
        """The `baggage` value a call carries, or None to leave the call's own as it is."""
        current = context.current()
        if current.lane:
            return context.baggage_with_lane(existing if existing is not None else current.baggage, current.lane)
        if current.baggage and existing is None:
            return current.baggage
        return None

    def consumer(self) -> str:
        """The `x-tidegate-consumer` value calls to services carry ("" when the agent has no service name)."""
        runtime = self.runtime
        return runtime.consumer if runtime is not None else ""

    def clock(self) -> float:
        runtime = self.runtime
        return runtime.clock() if runtime is not None else 0.0

    def retry_route(self, router: Router, service: str, tried: list[str]) -> Route | None:
        """Another instance for a call whose connection failed before sending, or None to give up.
        The instance that failed is ejected passively (lossless offline); with TIDEGATE_LOSSLESS=off
        nothing is retried."""
        lossless = self.lossless()
        if lossless is None:
            return None
        lossless.notices.connect_failed(tried[-1])
        if len(tried) >= CONNECT_ATTEMPTS:
            return None
        try:
            current = context.current()
            return router.route(service, None, current.lane, tried, current.request)
        except NoInstanceError:
            return None

    def lossless(self) -> LosslessOffline | None:
        runtime = self.runtime
        return runtime.capability(LosslessOffline) if runtime is not None else None

    def prepare(self, client: Any, drop: Callable[[Any, list[tuple[str, int]]], None]) -> None:
        """Before routing a call: let ejected instances whose backoff is over back in, and have
        `drop` close `client`'s idle connections to instances that said they drain."""
        lossless = self.lossless()
        if lossless is None:
            return
        notices = lossless.notices
        notices.recheck_due()
        sequence = notices.drop_sequence
        if sequence:
            seen = pools.pending(client, sequence)
            if seen is not None:
                pools.acted(client, sequence)
                drop(client, notices.drops_since(seen))

    def answered(self, route: Route, draining: str | None) -> None:
        """A response came back; `draining` is its `x-tidegate-draining` header (the third channel)."""
        lossless = self.lossless()
        if lossless is None:
            return
        if draining is not None:
            lossless.notices.notice(route.instance.id, route.instance.address, "response header")
        else:
            lossless.notices.ejections.succeeded(route.instance.id)

    def closed_idle(self, route: Route, tried: list[str]) -> bool:
        """The server closed the connection without answering: retry once elsewhere when the instance
        said it drains (a draining server closes only connections it has read nothing from)."""
        lossless = self.lossless()
        if lossless is None or len(tried) >= CONNECT_ATTEMPTS:
            return False
        if not lossless.notices.is_draining(route.instance.host, route.instance.port):
            return False
        tried.append(route.instance.id)
        return True

    def finish(self, route: Route, ok: bool, started: float) -> None:
        """End one attempt: release the instance and record the outcome."""
        route.done(ok)
        runtime = self.runtime
        if runtime is not None and runtime.metrics is not None:
            runtime.metrics.observe_outbound(route.service, ok, runtime.clock() - started)

    def admit(self, route: Route) -> Guarded:
        """Enter the outbound resource `http://<service>` for a call routed by `route`, waiting out a
        throttling queue. Refused: the route is released and the library's BlockedError raised, or
        the service's configured fallback answers (`Guarded.refused`, `Guarded.fallback`)."""
        guarded = self._enter(route)
        if guarded.wait_s > 0.0:
            time.sleep(guarded.wait_s)
        return guarded

    async def admit_async(self, route: Route) -> Guarded:
        """`admit` for async clients: the throttling wait does not block the event loop."""
        guarded = self._enter(route)
        if guarded.wait_s > 0.0:
            await asyncio.sleep(guarded.wait_s)
        return guarded

    def _enter(self, route: Route) -> Guarded:
        stability = self._stability()
        if stability is None:
            return Guarded(None, None, "")
        resource = f"http://{route.service}"
        if not stability.governs(resource):
            return Guarded(None, None, "")
        try:
            entry = stability.enter(resource)
        except BlockedError as error:
            route.done(False)
            fallback = stability.fallbacks.get(route.service)
            if fallback is not None:
                return Guarded(None, None, resource, fallback(error), True)
            raise library_blocked_error(error, self.blocked_base) from None
        return Guarded(stability, entry, resource)

    def _stability(self) -> Stability | None:
        runtime = self.runtime
        return runtime.capability(Stability) if runtime is not None else None

    def _patch(self) -> None:
        raise NotImplementedError

    def _unpatch(self) -> None:
        raise NotImplementedError


class Guarded:
    """An outbound call's stability entry; `leave(ok)` once when the call ends (ok=False on error or 5xx)."""

    __slots__ = ("_stability", "_entry", "resource", "fallback", "refused", "wait_s")

    def __init__(
        self, stability: Stability | None, entry: Entry | None, resource: str, fallback: Any = None, refused: bool = False
    ) -> None:
        self._stability = stability
        self._entry = entry
        self.resource = resource
        #: What the configured fallback answered for a refused call (when `refused`).
        self.fallback = fallback
        self.refused = refused
        self.wait_s = entry.wait_s if entry is not None else 0.0

    def leave(self, ok: bool) -> None:
        entry, self._entry = self._entry, None
        if entry is not None and self._stability is not None:
            self._stability.leave(entry, self.resource, not ok)


@functools.cache
def _blocked_type(kind: type[BlockedError], base: type[Exception]) -> type[BlockedError]:
    return type(kind.__name__, (kind, base), {"__module__": kind.__module__, "__doc__": kind.__doc__})


def library_blocked_error(error: BlockedError, base_name: str) -> BlockedError:
    """`error` as an instance of its class and of the library's `base_name` error too, so an app's
    existing `except httpx.HTTPError` (or requests', aiohttp's) catches a refused call."""
    if not base_name:
        return error
    module_name, _, class_name = base_name.rpartition(".")
    base = getattr(importlib.import_module(module_name), class_name)
    return _blocked_type(type(error), base)(error.resource, error.rule, error.reason, error.retry_after_s)
