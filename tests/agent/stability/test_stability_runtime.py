"""The agent's stability part in process: rules from the rule book, events, blocked responses, samplers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import requests

from tests.support.clock import FakeClock
from tidegate.agent.config import AgentConfig
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.outbound.errors import LibraryErrors
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.agent.stability.responses import BODY_ENV, retry_after_header
from tidegate.agent.stability.saturation import CpuSampler, LoopLagSampler
from tidegate.core.rulebook import StoredRule
from tidegate.errors import BlockedError, BreakerOpenError, FlowBlockedError, SystemBlockedError


def _runtime(clock: FakeClock | None = None) -> tuple[AgentRuntime, Stability, list[dict[str, Any]]]:
    runtime = AgentRuntime(config=AgentConfig(service="shop"), metrics=AgentMetrics())
    if clock is not None:
        runtime.clock = clock
    posted: list[dict[str, Any]] = []
    events = StabilityEvents(posted.append, "shop", flush_s=3600)  # flushed by hand below
    stability = Stability(runtime, events=events)
    runtime.add(stability)
    runtime.rulebook.add_listener(stability.on_rules_changed)
    return runtime, stability, posted


def _rule(name: str, resource: str, strategy: dict[str, Any], app: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
        "kind": "FaultToleranceRule",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "targets": [{"targetResourceName": resource}], "strategies": [strategy]},
    }


def _limit(threshold: int) -> dict[str, Any]:
    return {"kind": "RateLimitStrategy", "spec": {"threshold": threshold, "statDurationSeconds": 1}}


def _put(runtime: AgentRuntime, document: dict[str, Any], revision: int) -> None:
    runtime.rulebook.put(StoredRule("default", document["kind"], document["metadata"]["name"], revision, document))


def test_rule_book_changes_load_every_stability_document_at_once() -> None:
    runtime, stability, _ = _runtime()
    _put(runtime, _rule("a", "GET /a", _limit(5)), 1)
    _put(runtime, _rule("b", "GET /b", _limit(7)), 2)
    _put(runtime, _rule("other-app", "GET /c", _limit(1), app="billing"), 3)  # another service's rule
    runtime.rulebook.put(StoredRule("default", "TrafficLane", "x", 4, {"kind": "TrafficLane"}))  # not a stability kind
    assert sorted((r.resource, r.threshold) for r in stability.governor.rules.flow) == [("GET /a", 5), ("GET /b", 7)]
    runtime.rulebook.remove(("default", "FaultToleranceRule", "a"), 5)
    assert [r.resource for r in stability.governor.rules.flow] == ["GET /b"]


def test_a_set_that_does_not_compile_keeps_the_rules_in_force_and_is_reported() -> None:
    runtime, stability, posted = _runtime()
    _put(runtime, _rule("a", "GET /a", _limit(5)), 1)
    dangling = _rule("a", "GET /a", {"name": "missing-strategy"})
    _put(runtime, dangling, 2)
    assert [(r.resource, r.threshold) for r in stability.governor.rules.flow] == [("GET /a", 5)]
    stability.events.flush()
    (event,) = posted
    assert event["type"] == "rule-refused" and event["service"] == "shop"
    assert "missing-strategy" in event["error"] and event["document"] == "FaultToleranceRule/a"


def test_blocks_are_counted_in_metrics_and_posted_aggregated() -> None:
    clock = FakeClock(50.0)
    runtime, stability, posted = _runtime(clock)
    _put(runtime, _rule("a", "GET /a", _limit(2)), 1)
    refused = 0
    for _ in range(5):
        try:
            stability.leave(stability.enter("GET /a"), "GET /a")
        except FlowBlockedError:
            refused += 1
    assert refused == 3
    row = next(r for r in runtime.metrics.snapshot()["resources"] if r[0] == "GET /a")  # type: ignore[union-attr]
    assert row[1:4] == [2, 3, 0]
    stability.events.flush()
    assert [(e["type"], e["resource"], e["count"], e["error"]) for e in posted] == [("block", "GET /a", 3, "FlowBlockedError")]
    stability.events.flush()
    assert len(posted) == 1  # nothing new: nothing posted


def test_breaker_state_changes_are_posted() -> None:
    clock = FakeClock(50.0)
    runtime, stability, posted = _runtime(clock)
    _put(
        runtime,
        _rule(
            "dep",
            "http://inventory",
            {
                "kind": "CircuitBreakerStrategy",
                "spec": {
                    "strategy": "ErrorRequestCount",
                    "triggerCount": 1,
                    "statDuration": "10s",
                    "recoveryTimeout": "1s",
                    "minRequestAmount": 1,
                },
            },
        ),
        1,
    )
    stability.leave(stability.enter("http://inventory"), "http://inventory", error=True)
    with pytest.raises(BreakerOpenError) as refused:
        stability.enter("http://inventory")
    assert retry_after_header(refused.value) == "1"
    clock.now += 1.0
    stability.leave(stability.enter("http://inventory"), "http://inventory")  # the probe succeeds
    stability.events.flush()
    changes = [(e["from"], e["to"]) for e in posted if e["type"] == "breaker"]
    assert changes == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    assert all(e["resource"] == "http://inventory" and e["service"] == "shop" for e in posted if e["type"] == "breaker")


def test_blocked_response_default_and_configured_body(monkeypatch: pytest.MonkeyPatch) -> None:
    _, stability, _ = _runtime()
    status, headers, body = stability.blocked_response(FlowBlockedError("GET /a", "a/rate", "5 calls per 1s reached", 0.2))
    assert status == 429
    assert ("retry-after", "1") in headers and ("content-type", "application/json") in headers
    assert json.loads(body) == {"error": "blocked", "resource": "GET /a", "rule": "a/rate", "reason": "5 calls per 1s reached"}
    status, headers, _ = stability.blocked_response(SystemBlockedError("GET /a", "adaptive", "busy"))
    assert status == 503 and all(name != "retry-after" for name, _ in headers)

    monkeypatch.setenv(BODY_ENV, '{"code": "{status}", "message": "try later", "detail": ["{resource}"]}')
    _, configured, _ = _runtime()
    _, _, body = configured.blocked_response(BreakerOpenError("GET /a", "b", "circuit breaker OPEN", 2.5))
    assert json.loads(body) == {"code": "503", "message": "try later", "detail": ["GET /a"]}

    monkeypatch.setenv(BODY_ENV, "not json")
    _, fallback, _ = _runtime()
    _, _, body = fallback.blocked_response(FlowBlockedError("GET /a"))
    assert json.loads(body)["error"] == "blocked"


def test_hotspot_parameters_are_known_per_resource() -> None:
    runtime, stability, _ = _runtime()
    runtime.rulebook.put(
        StoredRule(
            "default",
            "HotspotRule",
            "hot",
            1,
            {
                "apiVersion": "tidegate.io/v1alpha1",
                "kind": "HotspotRule",
                "metadata": {"name": "hot"},
                "spec": {"resource": "GET /u/{id}", "parameter": {"source": "header", "name": "X-User"}, "threshold": 1},
            },
        )
    )
    assert stability.hotspot_params == {"GET /u/{id}": ("header:x-user",)}


def test_refused_outbound_errors_are_also_the_librarys_own() -> None:
    for base, kind in (("httpx.TransportError", httpx.HTTPError), ("requests.ConnectionError", requests.RequestException)):
        error = LibraryErrors(error_base=base).blocked(BreakerOpenError("http://inventory", "dep", "circuit breaker OPEN", 3.0))
        assert isinstance(error, BreakerOpenError) and isinstance(error, BlockedError) and isinstance(error, kind)
        assert (error.resource, error.rule, error.retry_after_s) == ("http://inventory", "dep", 3.0)


def test_loop_lag_sampler_sees_a_blocked_loop() -> None:
    _, stability, _ = _runtime()
    sampler = LoopLagSampler(stability.governor, interval_s=0.01, samples=1000)

    async def run() -> float:
        sampler.ensure()
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # a CPU-bound handler holds the loop
        await asyncio.sleep(0.05)
        return stability.governor.readings.loop_lag_s

    after = asyncio.run(run())
    # The sampler's 0.01 s sleep was pending during the 0.3 s block, so it woke at least 0.29 s late.
    assert after >= 0.29


def test_cpu_sampler_reads_a_busy_process() -> None:
    _, stability, _ = _runtime()
    sampler = CpuSampler(stability.governor, interval_s=0.05)
    sampler.ensure_started()
    sampler.ensure_started()  # one thread only
    try:
        deadline = time.monotonic() + 30
        while stability.governor.readings.cpu_usage <= 0.0:  # spin: this process uses CPU
            assert time.monotonic() < deadline, "no CPU reading"
        assert 0.0 < stability.governor.readings.cpu_usage <= 1.0
    finally:
        sampler.stop()


def test_only_inbound_resources_a_rule_names_go_through_the_governor() -> None:
    runtime, stability, _ = _runtime()
    assert not stability.governs_inbound("GET /a")  # no rules: nothing to govern
    _put(runtime, _rule("a", "GET /a", _limit(5)), 1)
    assert stability.governs_inbound("GET /a") and not stability.governs_inbound("GET /b")
    adaptive = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AdaptiveProtection",
        "metadata": {"name": "sys"},
        "spec": {"selector": {"app": "shop"}, "maxCpuUsage": 0.8},
    }
    _put(runtime, adaptive, 2)
    assert stability.governor.rules.adaptive
    assert stability.governs_inbound("GET /b")  # an adaptive rule weighs every inbound request


def test_outbound_services_no_rule_names_skip_the_governor() -> None:
    runtime, stability, _ = _runtime()
    _put(runtime, _rule("a", "http://stock", _limit(5)), 1)
    assert stability.governs("http://stock")
    assert not stability.governs("http://orders")
