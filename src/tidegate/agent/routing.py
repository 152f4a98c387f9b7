"""Service-name routing of outbound calls: `http://orders/...` to one live instance of `orders`.

Instrumentors ask `OutboundRouter.route(host, port)` for every outbound call.
A host that is not a registered service name gets None and the call goes out
untouched; a known service gets a `Route` to one instance chosen by its
balancer, or `NoInstanceError` when none is live. The caller ends the route
with `done(ok)` so in-flight counts stay true.

Balancers are per service and rebuilt when the directory says the service
changed; the request path reads one dict and never locks.
"""

from __future__ import annotations

import random as random_module
import threading
from typing import Callable, Collection, Sequence

from tidegate.core.balancer import DEFAULT_BALANCER, Balancer, BalancerFactory, InFlight, WeightOf, registered_weight
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
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


class OutboundRouter:
    """Chooses the instance for every outbound call to a service name."""

    def __init__(
        self,
        directory: ServiceDirectory,
        balancer_factory: BalancerFactory = DEFAULT_BALANCER,
        rng: random_module.Random | Callable[[], float] | None = None,
        weighting: Weighting = registered_weights,
    ) -> None:
        self._directory = directory
        self._factory = balancer_factory
        if rng is None:
            rng = random_module.Random()
        self._random: Callable[[], float] = rng.random if isinstance(rng, random_module.Random) else rng
        self._weighting = weighting
        self._write_lock = threading.Lock()
        self._in_flight: dict[str, InFlight] = {}
        self._balancers: dict[str, Balancer] = {}
        directory.add_listener(self._rebuild)  # first, so no change slips between the build and the listen
        for service in directory.services():
            self._rebuild(service)

    def route(self, host: str, port: int | None = None, lane: str = "", exclude: Collection[str] = ()) -> Route | None:
        """The route for a call to `host`, or None when `host` is not a service name.

        `port` is accepted for the caller's convenience and ignored for
        service names: the chosen instance's port is used. `lane` is the hook
        for lane routing and is not used yet. `exclude` holds instance ids
        already tried by this call (a retry goes elsewhere). Raises
        `NoInstanceError` when the service is known but has no live instance.
        """
        balancer = self._balancers.get(host)
        if balancer is None:
            if not self._directory.knows(host):
                return None
            balancer = self._rebuild(host)
        instance = balancer.pick(exclude)
        if instance is None:
            raise NoInstanceError(host, lane)
        balancer.acquire(instance)
        return Route(host, instance, balancer)

    def reweigh(self) -> None:
        """Ask `weight_of` again for every service (warm-up calls this as weights ramp)."""
        for balancer in list(self._balancers.values()):
            balancer.reweigh()

    def after_fork_in_child(self) -> None:
        """A forked child has none of its parent's calls in flight, and must not
        inherit a lock some parent thread held at the fork."""
        self._write_lock = threading.Lock()
        self._in_flight = {}
        self._balancers = {}
        for service in self._directory.services():
            self._rebuild(service)

    def in_flight(self, service: str) -> dict[str, int]:
        """Calls in flight per instance id of `service`."""
        tracker = self._in_flight.get(service)
        return tracker.snapshot() if tracker else {}

    def _rebuild(self, service: str) -> Balancer:
        with self._write_lock:
            tracker = self._in_flight.setdefault(service, InFlight())
            instances = self._directory.routable(service)
            balancer = self._factory(instances, tracker, self._random, self._weighting(instances))
            balancers = dict(self._balancers)
            if self._directory.knows(service):
                balancers[service] = balancer
            else:
                balancers.pop(service, None)
            self._balancers = balancers  # one swap: readers see the old dict or the new one
        return balancer
