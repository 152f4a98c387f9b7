"""tidegate.guard: sync and async context managers and decorators, fallbacks, breakers, queueing."""

from __future__ import annotations

import asyncio
import importlib

import pytest

import tidegate
from tests.support.clock import FakeClock
from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import Governor, RuleSet
from tidegate.core.hotspot import HotspotRule
from tidegate.errors import BreakerOpenError, FlowBlockedError, HotspotBlockedError, RuleError
from tidegate.guard import load_documents, local_governor


def governed(*flow: FlowRule, breakers: tuple[BreakerRule, ...] = (), hotspot: tuple[HotspotRule, ...] = ()) -> Governor:
    gov = Governor()
    gov.load(RuleSet(flow=flow, breakers=breakers, hotspot=hotspot))
    return gov


def test_context_manager_admits_up_to_the_threshold_then_raises(clock: FakeClock) -> None:
    gov = governed(FlowRule("pricing", 2))
    for _ in range(2):
        with tidegate.guard("pricing", governor=gov, clock=clock):
            pass
    with pytest.raises(FlowBlockedError) as refused:
        with tidegate.guard("pricing", governor=gov, clock=clock):
            pytest.fail("the body of a refused guard must not run")
    assert refused.value.resource == "pricing"
    assert isinstance(refused.value, tidegate.BlockedError)
    clock.advance(1.0)  # the next second has its own budget
    with tidegate.guard("pricing", governor=gov, clock=clock):
        pass


def test_exception_in_the_body_counts_as_error_and_propagates(clock: FakeClock) -> None:
    gov = Governor()
    with pytest.raises(KeyError):
        with tidegate.guard("lookup", governor=gov, clock=clock):
            raise KeyError("x")
    window = gov.stat_node("lookup").second  # type: ignore[union-attr]
    assert window.error_count(int(clock.now * 1000)) == 1
    assert gov.stat_node("lookup").concurrency == 0  # type: ignore[union-attr]


def test_async_context_manager(clock: FakeClock) -> None:
    gov = governed(FlowRule("async-res", 1))

    async def run() -> list[str]:
        outcomes = []
        for _ in range(3):
            try:
                async with tidegate.guard("async-res", governor=gov, clock=clock):
                    outcomes.append("ran")
            except FlowBlockedError:
                outcomes.append("blocked")
        return outcomes

    assert asyncio.run(run()) == ["ran", "blocked", "blocked"]


def test_decorator_with_fallback_and_without(clock: FakeClock) -> None:
    gov = governed(FlowRule("price", 1), FlowRule("stock", 1))
    calls: list[int] = []

    @tidegate.guard("price", governor=gov, clock=clock, fallback=lambda error: ("fallback", error.rule))
    def price(item: int) -> tuple[str, str]:
        calls.append(item)
        return ("price", str(item))

    @tidegate.guard("stock", governor=gov, clock=clock)
    def stock() -> str:
        return "ok"

    assert price(1) == ("price", "1")
    assert price(2) == ("fallback", "flow:price")
    assert calls == [1]
    assert price.__name__ == "price"
    assert stock() == "ok"
    with pytest.raises(FlowBlockedError):
        stock()


def test_async_decorator_with_fallback(clock: FakeClock) -> None:
    gov = governed(FlowRule("remote", 1))

    @tidegate.guard("remote", governor=gov, clock=clock, fallback=lambda error: "cached")
    async def remote() -> str:
        await asyncio.sleep(0)
        return "fresh"

    async def run() -> list[str]:
        return [await remote(), await remote()]

    assert asyncio.run(run()) == ["fresh", "cached"]


def test_failures_open_the_breaker_and_the_fallback_answers(clock: FakeClock) -> None:
    breaker = BreakerRule("flaky", "error_count", 2, min_request_amount=2, retry_timeout_ms=5000)
    gov = governed(breakers=(breaker,))

    @tidegate.guard("flaky", governor=gov, clock=clock, fallback=lambda error: type(error).__name__)
    def flaky() -> str:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            flaky()
    assert flaky() == "BreakerOpenError"
    clock.advance(5.0)  # recovery timeout passed: a probe is let through (and fails again)
    with pytest.raises(ConnectionError):
        flaky()
    assert flaky() == "BreakerOpenError"
    with pytest.raises(BreakerOpenError):
        with tidegate.guard("flaky", governor=gov, clock=clock):
            pass


def test_hotspot_args_limit_one_value(clock: FakeClock) -> None:
    gov = governed(hotspot=(HotspotRule("by-user", "arg:user", 1),))
    with tidegate.guard("by-user", governor=gov, clock=clock, args={"arg:user": "alice"}):
        pass
    with pytest.raises(HotspotBlockedError):
        with tidegate.guard("by-user", governor=gov, clock=clock, args={"arg:user": "alice"}):
            pass
    with tidegate.guard("by-user", governor=gov, clock=clock, args={"arg:user": "bob"}):
        pass


def test_throttling_wait_is_slept_before_the_body(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    gov = governed(FlowRule("paced", 10, behavior="throttle", max_queue_s=1.0))
    slept: list[float] = []
    guard_module = importlib.import_module("tidegate.guard")  # the attribute tidegate.guard is the function
    monkeypatch.setattr(guard_module.time, "sleep", slept.append)
    with tidegate.guard("paced", governor=gov, clock=clock):
        pass
    with tidegate.guard("paced", governor=gov, clock=clock):
        pass
    assert slept == [pytest.approx(0.1)]


def test_local_governor_takes_rule_documents() -> None:
    documents = [
        {
            "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
            "kind": "FaultToleranceRule",
            "metadata": {"name": "local-guard"},
            "spec": {
                "targets": [{"targetResourceName": "local-res"}],
                "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": 1, "statDurationSeconds": 1}}],
            },
        }
    ]
    try:
        load_documents(documents)
        assert [r.resource for r in local_governor().rules.flow] == ["local-res"]
        with pytest.raises(RuleError):
            load_documents([{**documents[0], "spec": {**documents[0]["spec"], "targets": "nope"}}])
        assert [r.resource for r in local_governor().rules.flow] == ["local-res"]  # the old set stays
    finally:
        local_governor().load(RuleSet())


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="resource name"):
        tidegate.guard("")
