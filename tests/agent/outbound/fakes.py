"""Fakes around the outbound call pipeline: a router, admission, drain signals, metrics, a scripted
transport, and the adapter loop (sync and async) exactly as the pipeline's docstring shows it.

Every fake appends what it is told to one shared `events` list, so a test can
assert the order in which the pipeline asks for things (admission before a
slot, release before the admission is left)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.agent.outbound.call import Address, ErrorKind, OutboundCall, OutboundPipeline
from tidegate.agent.outbound.errors import PLAIN, LibraryErrors
from tidegate.core.coloring import RequestView
from tidegate.core.context import DRAINING_HEADER
from tidegate.core.governor import Entry, ResourceSlot
from tidegate.core.instance import Instance
from tidegate.errors import BlockedError, NoInstanceError

Events = list[tuple[Any, ...]]


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def instance(service: str, n: int, tag: str = "") -> Instance:
    return Instance(id=f"{service[0]}{n}", service=service, host="10.0.0.1", port=9000 + n, tag=tag)


class FakeRoute:
    def __init__(self, router: FakeRouter, service: str, instance: Instance) -> None:
        self.router = router
        self.service = service
        self.instance = instance
        self.released = 0

    def done(self, ok: bool) -> None:
        self.released += 1
        self.router.in_flight[self.instance.id] -= 1
        self.router.events.append(("done", self.instance.id, ok))


class FakeRouter:
    """Routes `service` to the first of its instances not excluded; knows `empty` services with none."""

    def __init__(self, events: Events, services: Mapping[str, Sequence[Instance]], empty: Collection[str] = ()) -> None:
        self.events = events
        self.services = services
        self.empty = set(empty)
        self.in_flight: dict[str, int] = {}
        self.routes: list[FakeRoute] = []

    def knows(self, host: str) -> bool:
        return host in self.services or host in self.empty

    def route(
        self, host: str, port: int | None = None, lane: str = "", exclude: Collection[str] = (), request: RequestView | None = None
    ) -> FakeRoute | None:
        self.events.append(("route", host, port, lane, tuple(exclude), request))
        if host not in self.services and host not in self.empty:
            return None
        for candidate in self.services.get(host, ()):
            if candidate.id not in exclude:
                self.in_flight[candidate.id] = self.in_flight.get(candidate.id, 0) + 1
                route = FakeRoute(self, host, candidate)
                self.routes.append(route)
                return route
        raise NoInstanceError(host, lane)

    def slots_taken(self) -> int:
        return sum(self.in_flight.values())


class FakeAdmission:
    """Governs `governed` resources; refuses with `refuse` when set; queues calls for `wait_s`."""

    def __init__(self, events: Events, clock: FakeClock, governed: Collection[str] = ()) -> None:
        self.events = events
        self.clock = clock
        self.governed = set(governed)
        self.refuse: BlockedError | None = None
        self.wait_s = 0.0
        self.fallbacks: dict[str, Callable[[BlockedError], Any]] = {}

    def governs(self, resource: str) -> bool:
        return resource in self.governed

    def enter(self, resource: str) -> Entry:
        self.events.append(("enter", resource))
        if self.refuse is not None:
            raise self.refuse
        return Entry(ResourceSlot(resource), self.clock() + self.wait_s, self.wait_s, None)

    def leave(self, entry: Entry, resource: str, error: bool = False) -> None:
        self.events.append(("leave", resource, error))


class FakeEjections:
    def __init__(self, events: Events) -> None:
        self.events = events

    def succeeded(self, key: str) -> None:
        self.events.append(("succeeded", key))


class FakeDrains:
    """Drain signals: `draining` addresses ("host:port") said they drain; `drops` what clients drop."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.ejections = FakeEjections(events)
        self.draining: set[str] = set()
        self.drops: list[Address] = []

    @property
    def drop_sequence(self) -> int:
        return len(self.drops)

    def notice(self, instance_id: str, address: str, channel: str) -> bool:
        self.events.append(("notice", instance_id, address, channel))
        return True

    def connect_failed(self, instance_id: str) -> None:
        self.events.append(("connect_failed", instance_id))

    def is_draining(self, host: str, port: int) -> bool:
        return f"{host}:{port}" in self.draining

    def recheck_due(self) -> None:
        self.events.append(("recheck_due",))

    def drops_since(self, sequence: int) -> list[Address]:
        return self.drops[sequence:]


class FakeObserver:
    def __init__(self, events: Events) -> None:
        self.events = events

    def observe_outbound(self, service: str, ok: bool, seconds: float) -> None:
        self.events.append(("observe", service, ok, seconds))


# -- the transport and the adapter -------------------------------------------------------------


class NothingSent(Exception):
    """The fake library's connect error."""


class ClosedIdle(Exception):
    """The fake library's "server closed the connection" error."""


class Broken(Exception):
    """Any other error of the fake library."""


class StatusError(Exception):
    """The fake library raising on a response it got (aiohttp's raise_for_status)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    instance: str = ""


#: What an instance does with one attempt: a Response, or an exception class to raise.
Outcome = Response | type[BaseException] | BaseException


class Transport:
    """Answers each attempt by the instance it is aimed at, from a script (the last outcome repeats)."""

    def __init__(self, events: Events, clock: FakeClock, script: Mapping[str, Sequence[Outcome]], latency_s: float = 0.25) -> None:
        self.events = events
        self.clock = clock
        self.script = {key: list(outcomes) for key, outcomes in script.items()}
        self.latency_s = latency_s
        self.sent: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []

    def send(self, host: str, port: int, headers: tuple[tuple[str, str], ...]) -> Response:
        key = f"{host}:{port}"
        self.sent.append((key, host, headers))
        self.events.append(("send", key))
        self.clock.now += self.latency_s
        outcomes = self.script[key]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Response):
            return Response(outcome.status, dict(outcome.headers), key)
        raise outcome

    async def send_async(self, host: str, port: int, headers: tuple[tuple[str, str], ...]) -> Response:
        await asyncio.sleep(0)
        return self.send(host, port, headers)


def classify(error: Exception) -> ErrorKind:
    """The fake library's exception classifier (what each library module writes for its own)."""
    if isinstance(error, NothingSent):
        return ErrorKind.NOTHING_SENT
    if isinstance(error, ClosedIdle):
        return ErrorKind.CLOSED_IDLE
    return ErrorKind.OTHER


class Sleeper:
    """Stands in for time.sleep / asyncio.sleep: moves the fake clock on and records the wait."""

    def __init__(self, events: Events, clock: FakeClock) -> None:
        self.events = events
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.events.append(("sleep", seconds))
        self.clock.now += seconds

    async def wait(self, seconds: float) -> None:
        self(seconds)


class Passed(Response):
    """What `drive` returns for a call that went out untouched."""


def drive(
    pipeline: OutboundPipeline,
    transport: Transport,
    sleep: Sleeper,
    host: str,
    port: int | None = None,
    *,
    lane: str = "",
    inbound: RequestView | None = None,
    errors: LibraryErrors = PLAIN,
    request: Any = None,
    client: object = None,
    dropped: list[Sequence[Address]] | None = None,
    method: str = "GET",
) -> Any:
    """A sync adapter: the pipeline's docstring pattern, with the fake transport as the library."""
    stale = pipeline.stale_addresses(client)
    if stale and dropped is not None:
        dropped.append(stale)
    call = pipeline.begin(host, port, lane=lane, inbound=inbound, errors=errors, request=request, method=method)
    if call is None:
        return Passed(200, instance=f"{host}:{port}")
    if call.refused is not None:
        return call.fallback
    try:
        if call.wait_s:
            sleep(call.wait_s)
        while True:
            route = call.attempt()
            try:
                response = transport.send(route.instance.host, route.instance.port, call.headers)
            except StatusError as error:
                call.failed(ErrorKind.OTHER, status=error.status)
                raise
            except Exception as error:
                if not call.failed(classify(error)):
                    raise
            else:
                call.answered(response.status, response.headers.get(DRAINING_HEADER))
                return response
    finally:
        call.finish()


async def drive_async(
    pipeline: OutboundPipeline, transport: Transport, sleep: Sleeper, host: str, port: int | None = None, *, lane: str = ""
) -> Any:
    """The async adapter: the same pattern, awaiting the wait and the send."""
    call: OutboundCall | None = pipeline.begin(host, port, lane=lane)
    if call is None:
        return Passed(200, instance=f"{host}:{port}")
    if call.refused is not None:
        return call.fallback
    try:
        if call.wait_s:
            await sleep.wait(call.wait_s)
        while True:
            route = call.attempt()
            try:
                response = await transport.send_async(route.instance.host, route.instance.port, call.headers)
            except Exception as error:
                if not call.failed(classify(error)):
                    raise
            else:
                call.answered(response.status, response.headers.get(DRAINING_HEADER))
                return response
    finally:
        call.finish()


class World:
    """One pipeline wired to fakes; `orders` has instances o1..o3 unless told otherwise."""

    def __init__(
        self,
        services: Mapping[str, Sequence[Instance]] | None = None,
        *,
        empty: Collection[str] = (),
        governed: Collection[str] = (),
        script: Mapping[str, Sequence[Outcome]] | None = None,
        lossless: bool = True,
        consumer: str = "frontend",
    ) -> None:
        self.events: Events = []
        self.clock = FakeClock()
        if services is None:
            services = {"orders": [instance("orders", n) for n in (1, 2, 3)]}
        self.router = FakeRouter(self.events, services, empty)
        self.admission = FakeAdmission(self.events, self.clock, governed)
        self.drains = FakeDrains(self.events)
        self.observer = FakeObserver(self.events)
        self.consumer = consumer
        self.pipeline = OutboundPipeline(
            self.router,
            admission=self.admission,
            drains=self.drains if lossless else None,
            observer=self.observer,
            consumer=lambda: self.consumer,
            clock=self.clock,
        )
        every = [i for members in services.values() for i in members]
        self.transport = Transport(self.events, self.clock, script or {i.address: [Response(200)] for i in every})
        self.sleep = Sleeper(self.events, self.clock)

    def call(self, host: str = "orders", port: int | None = None, **kwargs: Any) -> Any:
        return drive(self.pipeline, self.transport, self.sleep, host, port, **kwargs)

    def of(self, *kinds: str) -> list[tuple[Any, ...]]:
        """The events of these kinds, in order."""
        return [event for event in self.events if event[0] in kinds]
