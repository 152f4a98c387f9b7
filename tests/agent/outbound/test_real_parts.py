"""The pipeline wired to the agent's real parts (router, stability, drain notices, metrics), as boot will:
they satisfy its protocols (mypy checks this file), and lanes fall back to base through the real router."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.agent.outbound.fakes import FakeClock, NothingSent, Response, Sleeper, Transport, drive
from tidegate.agent.config import AgentConfig
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.offline.notices import DrainNotices
from tidegate.agent.outbound.call import OutboundPipeline
from tidegate.agent.outbound.router import OutboundRouter, Route
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.balancer import RoundRobinBalancer
from tidegate.core.instance import Instance
from tidegate.core.rulebook import StoredRule
from tidegate.errors import FlowBlockedError

LIMIT = {
    "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
    "kind": "FaultToleranceRule",
    "metadata": {"name": "orders-limit"},
    "spec": {
        "targets": [{"targetResourceName": "http://orders"}],
        "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": 2, "statDurationSeconds": 1}}],
    },
}


class Agent:
    def __init__(self, instances: list[Instance]) -> None:
        self.clock = FakeClock()
        self.runtime = AgentRuntime(config=AgentConfig(service="frontend"), clock=self.clock, consumer="frontend")
        self.metrics = AgentMetrics()
        self.runtime.metrics = self.metrics
        self.runtime.directory.replace(1, instances, ["orders"])
        self.router = OutboundRouter(self.runtime.directory, balancer_factory=RoundRobinBalancer, rng=random.Random(1))
        self.notices = DrainNotices(self.runtime.directory, self.clock)
        self.stability = Stability(self.runtime, events=StabilityEvents(lambda event: None, "frontend"))
        self.pipeline = OutboundPipeline(
            self.router,
            admission=self.stability,
            drains=self.notices,
            observer=self.metrics,
            consumer=lambda: self.runtime.consumer,
            clock=self.runtime.clock,
        )
        self.events: list[tuple[object, ...]] = []
        self.sleep = Sleeper(self.events, self.clock)

    def transport(self, script: dict[str, list[object]]) -> Transport:
        return Transport(self.events, self.clock, script)  # type: ignore[arg-type]

    def outbound(self) -> dict[tuple[str, bool], int]:
        return {(row[0], row[1]): row[2] for row in self.metrics.snapshot()["outbound"]}


def orders(n: int, tag: str = "") -> Instance:
    return Instance(id=f"o{n}", service="orders", host="127.0.0.1", port=9000 + n, tag=tag)


def test_a_failed_connect_ejects_through_the_real_notices_and_the_retry_is_counted() -> None:
    agent = Agent([orders(1), orders(2)])
    transport = agent.transport({"127.0.0.1:9001": [NothingSent], "127.0.0.1:9002": [Response(200)]})
    assert drive(agent.pipeline, transport, agent.sleep, "orders").instance == "127.0.0.1:9002"
    assert agent.notices.ejections.is_out("o1")
    assert [i.id for i in agent.runtime.directory.routable("orders")] == ["o2"]
    assert agent.outbound() == {("orders", False): 1, ("orders", True): 1}
    assert agent.router.in_flight("orders") == {}


def test_a_refused_call_takes_no_slot_of_the_real_router() -> None:
    agent = Agent([orders(1)])
    agent.runtime.rulebook.add_listener(agent.stability.on_rules_changed)
    agent.runtime.rulebook.put(StoredRule("default", "FaultToleranceRule", "orders-limit", 1, LIMIT))
    transport = agent.transport({"127.0.0.1:9001": [Response(200)]})
    taken: list[dict[str, int]] = []

    class Spy:
        def knows(self, host: str) -> bool:
            return agent.router.knows(host)

        def route(self, *args: Any) -> Route | None:
            got = agent.router.route(*args)
            taken.append(agent.router.in_flight("orders"))
            return got

    agent.pipeline.router = Spy()
    for _ in range(2):
        drive(agent.pipeline, transport, agent.sleep, "orders")
    with pytest.raises(FlowBlockedError):
        drive(agent.pipeline, transport, agent.sleep, "orders")
    assert taken == [{"o1": 1}, {"o1": 1}]  # the third call never reached the router
    assert agent.router.in_flight("orders") == {}
    row = next(r for r in agent.metrics.snapshot()["resources"] if r[0] == "http://orders")
    assert (row[1], row[2]) == (2, 1)


def test_a_lane_whose_instances_failed_to_connect_falls_back_to_base() -> None:
    agent = Agent([orders(1), orders(4, "gray"), orders(5, "gray")])
    transport = agent.transport({"127.0.0.1:9004": [NothingSent], "127.0.0.1:9005": [NothingSent], "127.0.0.1:9001": [Response(200)]})
    assert drive(agent.pipeline, transport, agent.sleep, "orders", lane="gray").instance == "127.0.0.1:9001"
    sent = [str(e[1]) for e in agent.events if e[0] == "send"]
    assert sorted(sent[:2]) == ["127.0.0.1:9004", "127.0.0.1:9005"] and sent[2:] == ["127.0.0.1:9001"]
    assert [i.id for i in agent.runtime.directory.routable("orders")] == ["o1"]  # both gray ones ejected
    assert agent.router.in_flight("orders") == {}
