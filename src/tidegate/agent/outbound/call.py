"""The outbound call pipeline: one sans-I/O object decides what a call to a service name does.

Every HTTP client instrumentor (httpx sync and async, requests, aiohttp) and
the gateway's proxy drive the same `OutboundCall`; it holds no socket and
never waits, so it is tested without a network (tests/agent/outbound). The
adapter only translates: the URL and headers of the library's request, and
the library's exceptions into an `ErrorKind`.

What the pipeline decides, per call to a service name:
  - admission first: when a rule names the resource `http://<service>`, the
    call is admitted (flow, hot-spot, breaker) before any instance is chosen,
    so a refused call takes no balancer slot. Refused: the service's fallback
    answers (`call.refused`, `call.fallback`), or `begin` raises the
    BlockedError that is also the library's error (`errors.LibraryErrors`);
    admitted: `call.wait_s` is the throttling queue's wait. A service no rule
    names skips admission;
  - the route: one instance from the router, or None (not a service name: the
    call goes out untouched), or the library's NoInstanceError raised;
  - a response: ok when its status is below 500; an `x-tidegate-draining`
    header marks the instance draining (lossless offline's third channel),
    otherwise the instance's passive-ejection history is cleared;
  - NOTHING_SENT (connect refused, reset or timed out: the request was never
    written): the instance is ejected passively and the call retried on
    another one, up to `CONNECT_ATTEMPTS` instances in all;
  - CLOSED_IDLE (a pooled connection the server closed without answering):
    retried only when the method is idempotent (RFC 9110 §9.2.2: GET, HEAD,
    OPTIONS, TRACE, PUT, DELETE): the library cannot tell whether the request
    was written, and the server may have read it as it closed (a POST
    retried could be done twice). From an instance that said it drains, on
    another instance, the drained one ejected passively; from a live one
    (its keep-alive timeout closed the connection as the request went out on
    it: the race every pooled client has, which Go's net/http and urllib3
    also retry), on any instance, a fresh connection, nothing ejected; at
    most `CONNECT_ATTEMPTS` attempts in all;
  - OTHER: never retried;
  - one outbound observation per attempt (service, ok, seconds from the
    attempt's start), one admission leave per call (ok: the last attempt's).
Without drain signals (TIDEGATE_LOSSLESS=off) nothing is retried.

How an adapter drives it (sync; async is the same with `await asyncio.sleep`
and `await send`, the pipeline itself never blocks; `drive.py` holds this loop,
sync and async, so an adapter writes only the lines up to `begin` and its
`send`, `outcome` and `classify`)::

    stale = pipeline.stale_addresses(client)       # before routing
    if stale:
        drop_idle_connections(client, stale)
    call = pipeline.begin(host, port, lane=ctx.lane, inbound=ctx.request, errors=ERRORS, request=request)
    if call is None:
        return send(request)                        # not a service name: untouched
    if call.refused is not None:
        return call.fallback                        # refused; the service's fallback answered
    try:
        if call.wait_s:
            time.sleep(call.wait_s)                 # a throttling rule queued the call
        while True:
            route = call.attempt()                  # aim at route.instance, set call.headers
            try:
                response = send(aim(request, route.instance, call.headers))
            except Exception as error:
                if not call.failed(classify(error)):   # True: loop, call.attempt() has the next instance
                    raise
            else:
                call.answered(response.status, response.headers.get(DRAINING_HEADER))
                return response
    finally:
        call.finish()                               # exactly once: releases, observes, leaves admission

`finish` also ends an attempt left open (a cancelled task, a KeyboardInterrupt)
as not ok. A library that raises on a response it got (aiohttp's
`raise_for_status`) reports `call.failed(ErrorKind.OTHER, status=error.status)`.
The adapter puts the caller's URL and Host header back itself.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

from tidegate.agent.outbound.errors import PLAIN, LibraryErrors
from tidegate.agent.runtime import Route, Router
from tidegate.core.coloring import RequestView
from tidegate.core.context import CONSUMER_HEADER
from tidegate.core.governor import Entry
from tidegate.core.instance import Instance
from tidegate.errors import BlockedError, NoInstanceError

#: Instances one call may try when connecting fails before anything was sent.
CONNECT_ATTEMPTS = 3
#: Methods a request may be sent again with after a connection closed unanswered (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: A host:port pair whose idle keep-alive connections a client should drop.
Address = tuple[str, int]


class ErrorKind(Enum):
    """What a failed attempt's exception says about the request, as the adapter classifies it."""

    #: Connect refused, reset or timed out: the request was never written (safe to send elsewhere).
    NOTHING_SENT = "nothing sent"
    #: A pooled connection the server closed without answering (a draining server closing idle ones).
    CLOSED_IDLE = "closed idle"
    #: Anything else: the server may have seen the request; never retried.
    OTHER = "other"


# -- what the pipeline needs of the rest of the agent ------------------------------------------
# Declared here (the router's `Router` and `Route` in the runtime, which names the router too) so
# the pipeline imports no capability: boot passes the real objects (OutboundRouter, Stability,
# LosslessOffline's DrainNotices, AgentMetrics, LosslessOnline's CalledServices).


class Admission(Protocol):
    """Stability's side of a call (`Stability`): which resources rules name, enter, leave, fallbacks."""

    def governs(self, resource: str, /) -> bool: ...
    def enter(self, resource: str, /) -> Entry: ...
    def leave(self, entry: Entry, resource: str, error: bool, /) -> None: ...
    @property
    def fallbacks(self) -> Mapping[str, Callable[[BlockedError], Any]]: ...


class EjectionSignals(Protocol):
    def succeeded(self, instance_id: str, /) -> None: ...


class DrainSignals(Protocol):
    """What lossless offline knows of the instances called (`DrainNotices`)."""

    @property
    def ejections(self) -> EjectionSignals: ...
    @property
    def drop_sequence(self) -> int: ...
    def notice(self, instance_id: str, address: str, channel: str, /) -> object: ...
    def connect_failed(self, instance_id: str, /) -> None: ...
    def is_draining(self, host: str, port: int, /) -> bool: ...
    def recheck_due(self) -> None: ...
    def drops_since(self, sequence: int, /) -> Sequence[Address]: ...


class CallObserver(Protocol):
    """Where attempts are counted (`AgentMetrics`)."""

    def observe_outbound(self, service: str, ok: bool, seconds: float, /) -> None: ...


def netloc(instance: Instance) -> str:
    """`host:port` of an instance, with an IPv6 host in brackets (the Host header of an aimed call)."""
    host = f"[{instance.host}]" if ":" in instance.host else instance.host
    return f"{host}:{instance.port}"


def _no_consumer() -> str:
    return ""


_NO_HEADERS: tuple[tuple[str, str], ...] = ()
_NO_ADDRESSES: Sequence[Address] = ()


class OutboundPipeline:
    """Begins every outbound call of a process; one per process, shared by every adapter."""

    __slots__ = ("router", "admission", "drains", "observer", "clock", "on_first_call", "_called", "_consumer", "_headers", "_acted")

    def __init__(
        self,
        router: Router,
        *,
        admission: Admission | None = None,
        drains: DrainSignals | None = None,
        observer: CallObserver | None = None,
        consumer: Callable[[], str] = _no_consumer,
        clock: Callable[[], float] = time.monotonic,
        on_first_call: Callable[[str], None] | None = None,
    ) -> None:
        self.router = router
        #: Stability's admission, or None (no stability part: nothing is admitted).
        self.admission = admission
        #: Lossless offline's drain signals, or None (switched off: nothing is retried).
        self.drains = drains
        self.observer = observer
        self.clock = clock
        #: Told each service name the first time this process routes a call to it (lossless online
        #: remembers them for the next start's prewarm); the pipeline keeps the names it told.
        self.on_first_call = on_first_call
        self._called: set[str] = set()
        # `x-tidegate-consumer` changes once (when the admin address is known): cache its header.
        self._consumer = consumer
        self._headers: tuple[str, tuple[tuple[str, str], ...]] = ("", _NO_HEADERS)  # (consumer, its headers)
        # Per client, the drop sequence it acted on (a weak key: the client's lifetime is the app's).
        self._acted: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def stale_addresses(self, client: object) -> Sequence[Address]:
        """Before routing a call made with `client`: let ejected instances whose backoff is over back in,
        and the addresses said to drain since `client` last asked (drop its idle connections to them)."""
        drains = self.drains
        if drains is None:
            return _NO_ADDRESSES
        drains.recheck_due()
        sequence = drains.drop_sequence
        if not sequence:
            return _NO_ADDRESSES
        acted = self._acted
        try:
            seen = acted.get(client, 0)
        except TypeError:  # not weak-referenceable: nothing to remember it by
            return _NO_ADDRESSES
        if seen >= sequence:
            return _NO_ADDRESSES
        acted[client] = sequence
        return drains.drops_since(seen)

    def begin(
        self,
        host: str,
        port: int | None = None,
        *,
        lane: str = "",
        inbound: RequestView | None = None,
        errors: LibraryErrors = PLAIN,
        request: Any = None,
        method: str = "GET",
    ) -> OutboundCall | None:
        """The call to `host`, or None when `host` is not a service name (the call goes out untouched).

        `lane` is the call's lane ("" = base); `inbound` the request being served
        (a canary's sticky key is read from it); `method` the request's HTTP method (only an
        idempotent one is retried after a connection closed unanswered). Raises `errors.blocked(...)` when a
        rule refuses the call and the service has no fallback, `errors.no_instance(...)`
        when no instance may take it; both carry `request` (the library's own
        request object) when the library's errors do. Only a service name is
        admitted (a rule naming a host that is no service name is inert), before
        it is routed; a known service with no instance leaves its admission as
        an error.
        """
        admission = self.admission
        entry = None
        resource = ""
        if admission is not None:
            resource = "http://" + host
            if admission.governs(resource) and self.router.knows(host):
                try:
                    entry = admission.enter(resource)
                except BlockedError as error:
                    fallback = admission.fallbacks.get(host)
                    if fallback is None:
                        raise errors.blocked(error, request) from None
                    return OutboundCall(self, host, resource, lane, inbound, None, None, _NO_HEADERS, error, fallback(error))
            else:
                resource = ""
        try:
            route = self.router.route(host, port, lane, (), inbound)
        except NoInstanceError as error:
            if entry is not None and admission is not None:
                admission.leave(entry, resource, True)
            raise errors.no_instance(error, request) from None
        except BaseException:
            if entry is not None and admission is not None:
                admission.leave(entry, resource, True)
            raise
        if route is None:
            if entry is not None and admission is not None:
                # The host stopped being a service name since `knows`: nothing to govern after all.
                admission.leave(entry, resource, False)
            return None
        service = route.service
        on_first_call = self.on_first_call
        if on_first_call is not None and service not in self._called:
            self._called.add(service)
            on_first_call(service)
        consumer = self._consumer()
        known, headers = self._headers
        if consumer != known:
            headers = ((CONSUMER_HEADER, consumer),) if consumer else _NO_HEADERS
            self._headers = (consumer, headers)
        call = OutboundCall(self, service, resource, lane, inbound, route, entry, headers, None, None)
        if method.upper() not in IDEMPOTENT_METHODS:
            call.idempotent = False
        return call


class OutboundCall:
    """One call to a service: its admission, its attempts, and what ends them. See the module docstring."""

    __slots__ = (
        "_pipeline",
        "service",
        "resource",
        "lane",
        "inbound",
        "_route",
        "_held",
        "_entry",
        "_tried",
        "_started",
        "headers",
        "refused",
        "fallback",
        "wait_s",
        "ok",
        "attempts",
        "idempotent",
        "_finished",
    )

    def __init__(
        self,
        pipeline: OutboundPipeline,
        service: str,
        resource: str,
        lane: str,
        inbound: RequestView | None,
        route: Route | None,
        entry: Entry | None,
        headers: tuple[tuple[str, str], ...],
        refused: BlockedError | None,
        fallback: Any,
    ) -> None:
        self._pipeline = pipeline
        self.service = service
        #: The stability resource the call was admitted to ("" when no rule names it).
        self.resource = resource
        self.lane = lane
        self.inbound = inbound
        self._route = route
        self._held = route is not None  # the route's balancer slot is taken
        self._entry = entry
        self._tried: list[str] | None = None  # instance ids tried, once an attempt failed
        self._started = -1.0  # the open attempt's start (-1: none open)
        #: Headers every attempt carries (`x-tidegate-consumer`); shared, never change them.
        self.headers = headers
        #: The refusal, when a rule refused the call and the service's fallback answered.
        self.refused = refused
        #: What the fallback answered (when `refused`): the adapter returns it as the response.
        self.fallback = fallback
        #: Seconds the adapter waits before the first attempt (a throttling rule's queue).
        self.wait_s = entry.wait_s if entry is not None else 0.0
        #: Whether the last attempt was ok (a response with a status below 500).
        self.ok = False
        self.attempts = 0
        #: Whether the request may be sent again after a connection closed unanswered (its method).
        self.idempotent = True
        self._finished = refused is not None

    def attempt(self) -> Route:
        """An attempt starts now: the route to aim it at (its instance's host and port)."""
        route = self._route
        if route is None or not self._held:
            raise RuntimeError("no attempt left: this call was refused, or its last attempt ended without a retry")
        self.ok = False
        self.attempts += 1
        self._started = self._pipeline.clock()
        return route

    def answered(self, status: int, draining: str | None) -> None:
        """The attempt got a response with `status`; `draining` is its `x-tidegate-draining` header. Ends the attempt."""
        if not self._held:
            return
        self.ok = status < 500
        try:
            drains = self._pipeline.drains
            route = self._route
            if drains is not None and route is not None:
                instance = route.instance
                if draining is not None:
                    drains.notice(instance.id, instance.address, "response header")
                else:
                    drains.ejections.succeeded(instance.id)
        finally:
            self._end_attempt()

    def failed(self, kind: ErrorKind, status: int | None = None) -> bool:
        """The attempt raised an error of `kind`; ends it. True: retry, `attempt()` gives the next
        instance; False: the adapter re-raises. `status`: the library raised on a response it got
        (aiohttp's `raise_for_status`), so the attempt is ok when it is below 500; never retried."""
        if status is not None:
            self.ok = status < 500
        retry = None
        try:
            route = self._route
            if route is not None and self._held:
                if kind is ErrorKind.NOTHING_SENT:
                    tried = self._tried
                    if tried is None:
                        tried = self._tried = []
                    tried.append(route.instance.id)
                    retry = self._retry(tried)
                elif kind is ErrorKind.CLOSED_IDLE and self.idempotent:
                    tried = self._closed_by_drain(route)
                    retry = self._retry(tried) if tried is not None else self._retry_closed_live(route)
        finally:
            self._end_attempt()
        if retry is None:
            return False
        self._route = retry
        self._held = True
        return True

    def finish(self) -> None:
        """The call ended (in a `finally`, once; later calls do nothing): an attempt left open ends
        not ok, an unused route is released, and the admission is left (ok: the last attempt's)."""
        if self._finished:
            return
        self._finished = True
        try:
            self._end_attempt()
        finally:
            entry = self._entry
            if entry is not None:
                self._entry = None
                admission = self._pipeline.admission
                if admission is not None:
                    admission.leave(entry, self.resource, not self.ok)

    def _end_attempt(self) -> None:
        """Release the route's slot and count the attempt (when one was started), once."""
        if not self._held:
            return
        self._held = False
        started, self._started = self._started, -1.0
        route = self._route
        if route is None:
            return
        ok = self.ok
        route.done(ok)
        pipeline = self._pipeline
        observer = pipeline.observer
        if observer is not None and started >= 0.0:
            observer.observe_outbound(route.service, ok, pipeline.clock() - started)

    def _retry(self, tried: list[str]) -> Route | None:
        """Another instance after a failed connect (`tried[-1]`, ejected passively), or None to give up."""
        pipeline = self._pipeline
        drains = pipeline.drains
        if drains is None:
            return None
        drains.connect_failed(tried[-1])
        if len(tried) >= CONNECT_ATTEMPTS:
            return None
        try:
            return pipeline.router.route(self.service, None, self.lane, tried, self.inbound)
        except NoInstanceError:
            return None

    def _retry_closed_live(self, route: Route) -> Route | None:
        """After a live instance closed an idle pooled connection as the request went out on it: any
        instance again (the library opens a fresh connection), none ejected, `CONNECT_ATTEMPTS` in all."""
        pipeline = self._pipeline
        if pipeline.drains is None or self.attempts >= CONNECT_ATTEMPTS:
            return None
        try:
            return pipeline.router.route(self.service, None, self.lane, self._tried or (), self.inbound)
        except NoInstanceError:
            return None

    def _closed_by_drain(self, route: Route) -> list[str] | None:
        """When a connection closed unanswered was a draining instance closing an idle one (and
        instances are left to try): the instance ids tried, this one added; else None."""
        drains = self._pipeline.drains
        tried = self._tried
        if drains is None or (tried is not None and len(tried) >= CONNECT_ATTEMPTS):
            return None
        instance = route.instance
        if not drains.is_draining(instance.host, instance.port):
            return None
        if tried is None:
            tried = self._tried = []
        tried.append(instance.id)
        return tried

    def __repr__(self) -> str:
        route = self._route
        where = f" -> {route.instance.id}" if route is not None else ""
        return f"OutboundCall({self.service!r}{where}, attempts={self.attempts}, ok={self.ok})"
