"""Consumer-side warm-up in the agent: the real router ramps a new instance, with settings pushed live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.clock import FakeClock
from tidegate.agent.config import AgentConfig
from tidegate.agent.online.warmup import ConsumerWarmup, settings_from_env, tick_s
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance
from tidegate.core.rulebook import StoredRule
from tidegate.core.warmup import WarmupSettings
from tidegate.rules.settings import KIND


def _instance(name: str, registered_at: float) -> Instance:
    return Instance(id=name, service="orders", host="127.0.0.1", port=1, registered_at=registered_at)


def _settings(revision: int, **spec: Any) -> StoredRule:
    document = {"apiVersion": "tidegate.io/v1alpha1", "kind": KIND, "metadata": {"name": "orders"}, "spec": {"service": "orders", **spec}}
    return StoredRule("default", KIND, "orders", revision, document)


def _weights(router: OutboundRouter) -> dict[str, float]:
    routes = router._routes["orders"]  # the balancer's table is what picks read
    [balancer] = routes.balancers.values() if routes.balancers else [routes.base]
    return {i.id: w for i, w in zip(balancer.instances, balancer._table[0])}


@pytest.fixture
def setup() -> Iterator[tuple[AgentRuntime, ConsumerWarmup, OutboundRouter, FakeClock]]:
    clock = FakeClock(10_000.0)
    runtime = AgentRuntime(config=AgentConfig(service="shop"))
    warmup = ConsumerWarmup(runtime, environ={"TIDEGATE_WARMUP_WINDOW": "100"}, clock=clock)
    router = OutboundRouter(runtime.directory, weighting=warmup.weighting)
    runtime.router = router
    runtime.directory.replace(1, [_instance("old-1", 1.0), _instance("old-2", 1.0), _instance("old-3", 1.0), _instance("new", clock.now)])
    yield runtime, warmup, router, clock
    clock.now += 1_000  # the directory change started the reweigh timer: let it end
    if warmup._thread is not None:
        warmup._thread.join(timeout=10)


def test_a_new_instance_ramps_quadratically_over_the_env_window(setup: Any) -> None:
    runtime, warmup, router, clock = setup
    assert _weights(router)["new"] == pytest.approx(1.0)  # 1% floor of 100
    clock.now += 50
    router.reweigh()
    assert _weights(router) == {"old-1": 100.0, "old-2": 100.0, "old-3": 100.0, "new": pytest.approx(25.0)}
    clock.now += 50
    router.reweigh()
    assert _weights(router)["new"] == 100.0
    assert warmup.warm_until() == 10_100.0


def test_settings_pushed_live_apply_at_the_next_reweigh(setup: Any) -> None:
    runtime, warmup, router, clock = setup
    clock.now += 50
    runtime.rulebook.put(_settings(2, warmupWindowSeconds=200, warmupCurve=1))  # the listener reweighs
    assert _weights(router)["new"] == pytest.approx(25.0)  # 50/200, linear
    runtime.rulebook.put(_settings(3, warmupWindowSeconds=0))
    assert _weights(router)["new"] == 100.0
    assert warmup.settings_of("orders") == WarmupSettings(window_s=0, curve=2.0)
    assert warmup.settings_of("billing") == WarmupSettings(window_s=100)


def test_the_reweigh_timer_runs_while_warming_and_ends_after(setup: Any) -> None:
    runtime, warmup, router, clock = setup
    warmup.ensure_ticking()
    thread = warmup._thread
    assert thread is not None
    clock.now += 100  # every window over: the timer's next pass is its last
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert _weights(router)["new"] == 100.0
    warmup.ensure_ticking()
    assert warmup._thread is thread  # nothing warming: no new timer


def test_env_defaults_and_bad_values() -> None:
    assert settings_from_env({}) == WarmupSettings()
    assert settings_from_env({"TIDEGATE_WARMUP_WINDOW": "30", "TIDEGATE_WARMUP_CURVE": "1"}) == WarmupSettings(window_s=30, curve=1)
    assert settings_from_env({"TIDEGATE_WARMUP_WINDOW": "soon", "TIDEGATE_WARMUP_CURVE": "0"}) == WarmupSettings()
    assert tick_s(120) == 0.6 and tick_s(1) == 0.05 and tick_s(10_000) == 1.0
