"""One gateway worker's engine: routes, lanes, router, drains, admission, pool and metrics on one event loop.

`Gateway` assembles what the proxy reads on every request: the route table
(rebuilt when GatewayRoute documents change, a bad document keeping its last
valid version), the lane rules (`tidegate.agent.lanes.LaneState`), the
outbound router over the shared `ServiceDirectory` with the warm-up ramp, the
drain notices, the admission, the upstream pool and the metrics. A sweeper
runs every `SWEEP_S`: deadlines of client connections, idle pooled
connections, ejections whose backoff is over, addresses that drain, weights.
`Limits` holds every bound of the data plane in one place.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tidegate.agent.lanes import LaneState
from tidegate.agent.offline.notices import DrainNotices
from tidegate.agent.outbound.call import OutboundPipeline
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.core.balancer import WeightOf
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook, RuleKey
from tidegate.core.warmup import WarmupWeights
from tidegate.errors import RuleError
from tidegate.gateway.access_log import AccessLog
from tidegate.gateway.config import Limits
from tidegate.gateway.edge import Edge
from tidegate.gateway.metrics import GatewayMetrics
from tidegate.gateway.protection import Admission
from tidegate.gateway.routes import RouteTable
from tidegate.gateway.upstream import Pool
from tidegate.rules.document import validate
from tidegate.rules.gateway import KIND, GatewayRoute

log = logging.getLogger("tidegate.gateway")

#: How often deadlines, idle pools, ejections and weights are looked at.
SWEEP_S = 0.25
DEFAULT_LIMITS = Limits()


class Gateway:
    """The engine of one worker process, on its event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        directory: ServiceDirectory,
        rulebook: RuleBook,
        *,
        service: str = "gateway",
        limits: Limits = DEFAULT_LIMITS,
        scheme: bytes = b"http",
        access_log: AccessLog | None = None,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self.directory = directory
        self.rulebook = rulebook
        self.service = service
        self.limits = limits
        self.scheme = scheme
        self.access_log = access_log
        self.draining = False
        self.connections: set[Any] = set()
        self.lanes = LaneState(rulebook, service, draw=draw)
        self.edge = Edge(self.lanes, service, draw)
        self.drains = DrainNotices(directory, clock)
        self.router = OutboundRouter(directory, lanes=self.lanes, weighting=_warmup_weighting, rng=draw)
        self.admission = Admission(rulebook, service, clock)
        self.consumer = service
        self.pipeline = OutboundPipeline(
            self.router, admission=self.admission, drains=self.drains, consumer=lambda: self.consumer, clock=clock
        )
        self.pool = Pool(loop)
        self.metrics = GatewayMetrics()
        self.metrics.pool_sizes = self.pool.sizes
        self.metrics.access_log = access_log
        self.metrics.gauges["tidegate_gateway_client_connections"] = lambda: len(self.connections)
        self.metrics.gauges["tidegate_gateway_upstream_connections_opened_total"] = lambda: self.pool.opened
        self.metrics.gauges["tidegate_gateway_client_lanes_dropped_total"] = lambda: self.edge.dropped
        self.metrics.gauges["tidegate_gateway_blocked_total"] = lambda: self.admission.blocked
        self.table = RouteTable()
        self._valid_routes: dict[RuleKey, GatewayRoute] = {}
        self._refused: dict[RuleKey, str] = {}
        self._routes_lock = threading.Lock()
        self._acted = 0
        self._sweeper: asyncio.TimerHandle | None = None
        rulebook.add_listener(self._rules_changed)
        self.rebuild_routes()

    # -- routes --------------------------------------------------------------------------------

    def _rules_changed(self, kind: str) -> None:
        if kind == KIND:
            self.rebuild_routes()

    def rebuild_routes(self) -> list[RuleError]:
        """Compile the GatewayRoute documents in force; one that fails keeps its last valid version."""
        problems: list[RuleError] = []
        with self._routes_lock:
            valid: dict[RuleKey, GatewayRoute] = {}
            for stored in self.rulebook.of_kind(KIND):
                try:
                    typed = validate(stored.document)
                except RuleError as error:
                    problems.append(error)
                    previous = self._valid_routes.get(stored.key)
                    if self._refused.get(stored.key) != str(error):
                        log.error(
                            "tidegate gateway: route %s refused (%s); %s",
                            "/".join(stored.key),
                            error,
                            "its previous version stays in force" if previous else "it is not applied",
                        )
                    self._refused[stored.key] = str(error)
                    if previous is not None:
                        valid[stored.key] = previous
                    continue
                self._refused.pop(stored.key, None)
                valid[stored.key] = typed
            self._valid_routes = valid
            self.table = RouteTable(valid.values())  # one swap: a request sees the old table or the new one
        log.info("tidegate gateway: %d route(s) in force", len(self.table))
        return problems

    # -- the sweeper -----------------------------------------------------------------------------

    def start_sweeping(self) -> None:
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        try:
            now = self.loop.time()
            for connection in list(self.connections):
                connection.expire(now)
            self.pool.sweep(now)
            drains = self.drains
            drains.recheck_due()
            sequence = drains.drop_sequence
            if sequence > self._acted:
                for address in drains.drops_since(self._acted):
                    self.pool.drop(address)
                self._acted = sequence
            self.router.reweigh()
        except Exception:
            log.exception("tidegate gateway: sweep failed")
        finally:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def busy(self) -> int:
        """Client connections with an exchange in flight."""
        return sum(1 for connection in self.connections if connection.exchange is not None or connection.queued)

    def begin_drain(self) -> None:
        self.draining = True
        for connection in list(self.connections):
            connection.drain()


def _warmup_weighting(instances: Sequence[Instance]) -> WeightOf:
    weights = WarmupWeights(instances)

    def weight_of(instance: Instance) -> float:
        return weights.weight(instance, time.time())

    return weight_of
