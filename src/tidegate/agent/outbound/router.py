"""Service-name routing of outbound calls: `http://orders/...` to one live instance of `orders`.

Instrumentors ask `OutboundRouter.route(host, port)` for every outbound call.
A host that is not a registered service name gets None and the call goes out
untouched; a known service gets a `Route` to one instance chosen by its
balancer, or `NoInstanceError` when none is live. The caller ends the route
with `done(ok)` so in-flight counts stay true.

Lanes (shared/DESIGN.md, "Lanes"): a service's routable instances are grouped
by tag, with one balancer per group, when the directory says the service
changed. A call without a lane to a service without a canary picks among the
base (untagged) instances; otherwise `LaneRouting.select` names the group:
the lane's tagged instances, else base ones (never when the lane is strict),
or a canary's tag for a share of base traffic. A call whose lane group was
used up by connect failures falls back to base as well. The request path
reads one dict and never locks.
"""

from __future__ import annotations

import random as random_module
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from tidegate.agent.capability import Capability
from tidegate.core.balancer import DEFAULT_BALANCER, Balancer, BalancerFactory, InFlight, WeightOf, registered_weight
from tidegate.core.coloring import RequestView
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.lanes import BASE, LaneRouting, group_by_tag
from tidegate.errors import NoInstanceError


class Route:
    """Where one outbound call goes; end it with `done` exactly once (later calls are no-ops)."""

    __slots__ = ("service", "instance", "_balancer", "_open")

    def __init__(self, service: str, instance: Instance, balancer: Balancer) -> None:
        self.service = service
        self.instance = instance
        self._balancer = balancer
        self._open = True

    @property
    def host(self) -> str:
        return self.instance.host

    @property
    def port(self) -> int:
        return self.instance.port

    def done(self, ok: bool) -> None:
        """The call ended (`ok`: a response came back and it was not a server error)."""
        if self._open:
            self._open = False
            self._balancer.release(self.instance)

    def __repr__(self) -> str:
        return f"Route({self.service!r} -> {self.instance.id} at {self.instance.address})"


#: Gives the `weight_of` for one snapshot of a service's routable instances;
#: asked at every rebuild, so warm-up can build its per-service weights there.
Weighting = Callable[[Sequence[Instance]], WeightOf]


def registered_weights(instances: Sequence[Instance]) -> WeightOf:
    """Every instance weighs what it registered with."""
    return registered_weight


class LaneRules(Protocol):
    """Where the router reads the lane and canary rules in force (`tidegate.agent.lanes.LaneState`)."""

    routing: LaneRouting


class _NoLaneRules:
    routing = LaneRouting()


class _ServiceRoutes:
    """One service's routable instances by tag, each group with its balancer."""

    __slots__ = ("groups", "balancers", "base")

    def __init__(self, groups: dict[str, tuple[Instance, ...]], balancers: dict[str, Balancer], base: Balancer) -> None:
        self.groups = groups
        self.balancers = balancers
        self.base = base


class OutboundRouter(Capability):
    """Chooses the instance for every outbound call to a service name (the runtime's `router`,
    and a capability for its after-fork hook)."""

    def __init__(
        self,
        directory: ServiceDirectory,
        balancer_factory: BalancerFactory = DEFAULT_BALANCER,
        rng: random_module.Random | Callable[[], float] | None = None,
        weighting: Weighting = registered_weights,
        lanes: LaneRules | None = None,
    ) -> None:
        self._directory = directory
        self._lanes: LaneRules = lanes if lanes is not None else _NoLaneRules()
        self._factory = balancer_factory
        if rng is None:
            rng = random_module.Random()
        self._random: Callable[[], float] = rng.random if isinstance(rng, random_module.Random) else rng
        self._weighting = weighting
        #: Asked about a host the directory does not know, before the call goes out untouched (the
        #: lifecycle's `watch_on_demand`: a process that serves nothing starts its watch at its first
        #: call by name); True when the directory may know more now.
        self.on_unknown: Callable[[str], bool] | None = None
        self._write_lock = threading.Lock()
        self._in_flight: dict[str, InFlight] = {}
        self._routes: dict[str, _ServiceRoutes] = {}
        directory.add_listener(self._changed)  # first, so no change slips between the build and the listen
        for service in directory.services():
            self._rebuild(service)

    def knows(self, host: str) -> bool:
        """Whether `host` is a service name (takes no balancer slot)."""
        return self._directory.knows(host)

    def route(
        self,
        host: str,
        port: int | None = None,
        lane: str = "",
        exclude: Collection[str] = (),
        request: RequestView | None = None,
    ) -> Route | None:
        """The route for a call to `host`, or None when `host` is not a service name.

        `port` is accepted for the caller's convenience and ignored for
        service names: the chosen instance's port is used. `lane` is the
        request's lane ("" = base). `exclude` holds instance ids already
        tried by this call (a retry goes elsewhere). `request` is the inbound
        request a canary's sticky key is read from (None: a random draw).
        Raises `NoInstanceError(service, lane)` when no instance may take it.
        """
        routes = self._routes.get(host)
        if routes is None:
            if not self._directory.knows(host):
                on_unknown = self.on_unknown
                if on_unknown is None or not on_unknown(host) or not self._directory.knows(host):
                    return None
            routes = self._routes.get(host) or self._rebuild(host)
        routing = self._lanes.routing
        if not lane and not routing.has_canary(host):
            balancer = routes.base
            instance = balancer.pick(exclude)
        else:
            sticky = None
            if not lane and request is not None:
                key = routing.sticky_key(host)
                sticky = key.read(request) if key is not None else None
            selection = routing.select(host, routes.groups, lane, self._random, sticky)
            balancer = routes.balancers.get(selection.tag, routes.base)
            instance = balancer.pick(exclude) if selection.instances else None
            if instance is None and selection.tag != BASE and not routing.is_strict(lane):
                # The lane's instances all failed to connect for this call: base ones take it.
                balancer = routes.base
                instance = balancer.pick(exclude)
        if instance is None:
            raise NoInstanceError(host, lane)
        balancer.acquire(instance)
        return Route(host, instance, balancer)

    def reweigh(self) -> None:
        """Ask `weight_of` again for every service (warm-up calls this as weights ramp)."""
        for routes in list(self._routes.values()):
            for balancer in routes.balancers.values():
                balancer.reweigh()

    def after_fork_in_child(self) -> None:
        """A forked child has none of its parent's calls in flight, and must not
        inherit a lock some parent thread held at the fork."""
        self._write_lock = threading.Lock()
        self._in_flight = {}
        self._routes = {}
        for service in self._directory.services():
            self._rebuild(service)

    def in_flight(self, service: str) -> dict[str, int]:
        """Calls in flight per instance id of `service`."""
        tracker = self._in_flight.get(service)
        return tracker.snapshot() if tracker else {}

    def _changed(self, service: str) -> None:
        self._rebuild(service)

    def _rebuild(self, service: str) -> _ServiceRoutes:
        with self._write_lock:
            tracker = self._in_flight.setdefault(service, InFlight())
            groups = group_by_tag(self._directory.routable(service))
            balancers = {tag: self._factory(members, tracker, self._random, self._weighting(members)) for tag, members in groups.items()}
            base = balancers.get(BASE) or self._factory((), tracker, self._random, self._weighting(()))
            routes = _ServiceRoutes(groups, balancers, base)
            all_routes = dict(self._routes)
            if self._directory.knows(service):
                all_routes[service] = routes
            else:
                all_routes.pop(service, None)
            self._routes = all_routes  # one swap: readers see the old dict or the new one
        return routes
