"""The one agent object of a process: what every instrumentor and the explicit API share.

The bootstrap (`tidegate.agent.boot`) builds it once per process and
publishes it with `set_runtime`; instrumentors read it with `get_runtime()`.
Tests build their own and pass it in.

It holds two kinds of parts. What a request uses is a plain attribute,
resolved once (`router`, `metrics`, `response_headers`, `consumer`), typed by
the small protocols below so that this module imports nothing of the parts
that implement them (the outbound pipeline uses the same `Router` and `Route`). The capabilities (lossless offline, lossless online,
stability, lanes, metrics, the router) are registered with `add` and found by
their class with `capability(Stability)`; the lifecycle calls their hooks
(`tidegate.agent.capability`). This module imports only `tidegate.core` and
the agent's settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from tidegate.agent.config import AgentConfig
from tidegate.core.coloring import RequestView
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.rulebook import RuleBook

C = TypeVar("C")


class Route(Protocol):
    """One attempt's instance of an outbound call, holding a balancer slot until `done`
    (`tidegate.agent.outbound.router.Route`)."""

    @property
    def service(self) -> str: ...

    @property
    def instance(self) -> Instance: ...

    def done(self, ok: bool, /) -> None: ...


class Router(Protocol):
    """Chooses the instance of an outbound call (`tidegate.agent.outbound.router.OutboundRouter`);
    what the outbound pipeline (`tidegate.agent.outbound.call`) asks of it."""

    def knows(self, host: str, /) -> bool:
        """Whether `host` is a service name (taking no balancer slot)."""
        ...

    def route(self, host: str, port: int | None, lane: str, exclude: Collection[str], request: RequestView | None, /) -> Route | None:
        """A route to one instance of `host`, or None when `host` is not a service name; raises
        `NoInstanceError` when no instance may take the call (`exclude`: instance ids it tried)."""
        ...


class WeightedRouter(Router, Protocol):
    """The runtime's router: it also reweighs as warm-up weights ramp, and counts calls in flight."""

    def reweigh(self) -> None: ...

    def in_flight(self, service: str) -> dict[str, int]: ...


class Metrics(Protocol):
    """This process's request statistics (`tidegate.agent.metrics.AgentMetrics`)."""

    @property
    def in_flight(self) -> int: ...

    def request_started(self) -> None: ...

    def observe_inbound(self, route: str, method: str, status: int, seconds: float, *, finished: bool = False) -> None: ...

    def observe_outbound(self, service: str, ok: bool, seconds: float) -> None: ...

    def observe_resource(self, resource: str, error: bool, seconds: float) -> None: ...

    def count_block(self, resource: str) -> None: ...

    def server_text(self) -> bytes:
        """The Prometheus text of the whole server: this process and its workers."""
        ...

    def server_in_flight(self) -> int:
        """Inbound requests in flight in the whole server."""
        ...


class DirectoryWatch(Protocol):
    """This process's watch of the registry (`tidegate.client.watch.Watcher`)."""

    def wait_synced(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...


class Lifecycle(Protocol):
    """The instance's life in the registry (`tidegate.agent.lifecycle.InstanceLifecycle`)."""

    state: InstanceState
    owner: bool
    instances: list[Instance]

    @property
    def watcher(self) -> DirectoryWatch | None: ...

    def listening(self, addresses: Sequence[tuple[str, int]]) -> None: ...

    def serving_requests(self) -> None: ...

    def stopping(self) -> None: ...

    def set_serving_state(self, state: InstanceState) -> list[Instance]: ...

    def lease_secret(self, instance_id: str) -> str:
        """What a state change of this process's instance `instance_id` sends in X-Tidegate-Lease."""
        ...

    def after_fork_in_child(self) -> None: ...


@dataclass
class AgentRuntime:
    config: AgentConfig
    directory: ServiceDirectory = field(default_factory=ServiceDirectory)
    rulebook: RuleBook = field(default_factory=RuleBook)
    router: WeightedRouter | None = None
    metrics: Metrics | None = None
    lifecycle: Lifecycle | None = None  # registration and admin endpoint; acts only in a server process
    clock: Callable[[], float] = time.monotonic
    #: Headers every inbound response carries while they are here (a draining
    #: instance's notice); changed in place, shared by every wrapped app.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    #: What this process's calls to other services say in `x-tidegate-consumer`:
    #: its service and, once known, its admin address (for direct drain notices).
    consumer: str = ""
    _registered: list[object] = field(default_factory=list, init=False, repr=False)
    _by_class: dict[type, object] = field(default_factory=dict, init=False, repr=False)

    def add(self, capability: C) -> C:
        """Register `capability` (after those registered before it); it is found by its class
        and by each of its base classes (the first registered wins there). Returns it."""
        if type(capability) in self._by_class:
            raise ValueError(f"a {type(capability).__name__} is registered on this runtime already")
        self._registered.append(capability)
        for kind in type(capability).__mro__[:-1]:  # every class but `object`
            self._by_class.setdefault(kind, capability)
        return capability

    def capability(self, kind: type[C]) -> C | None:
        """The registered capability of class `kind`, or None (not loaded, or switched off)."""
        return cast("C | None", self._by_class.get(kind))

    def capabilities(self, kind: type[C]) -> tuple[C, ...]:
        """Every registered capability that is a `kind`, in registration order."""
        return tuple(c for c in self._registered if isinstance(c, kind))


_runtime: AgentRuntime | None = None


def set_runtime(runtime: AgentRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> AgentRuntime | None:
    """The process's agent, or None when the agent is not loaded."""
    return _runtime
