"""Adaptive protection (BBR) pinned with a fake clock: exact admission at the capacity."""

from __future__ import annotations

import pytest

from tidegate.core.adaptive import AdaptiveRule
from tidegate.core.governor import Entry, Governor
from tidegate.errors import RuleError, SystemBlockedError


def measured_governor(rule: AdaptiveRule) -> Governor:
    """10 inbound calls of 250 ms completed in one 500 ms bucket: max 20/s x min RT 250 ms = capacity 5."""
    gov = Governor()
    gov.load_adaptive_rules([rule])
    calls = [gov.entry("GET /a", 10.0, inbound=True) for _ in range(10)]
    for entry in calls:
        entry.exit(10.25)
    return gov


def admit(gov: Governor, now: float, count: int) -> list[Entry]:
    return [gov.entry("GET /a", now, inbound=True) for _ in range(count)]


def test_not_saturated_admits_everything() -> None:
    gov = measured_governor(AdaptiveRule("cpu", max_cpu_usage=0.8))
    gov.observe(cpu_usage=0.5)
    assert len(admit(gov, 10.3, 50)) == 50


def test_saturated_admits_up_to_max_qps_times_min_rt() -> None:
    gov = measured_governor(AdaptiveRule("cpu", max_cpu_usage=0.8))
    gov.observe(cpu_usage=0.9)
    in_flight = admit(gov, 10.3, 6)  # admitted at 0, 1, 2, 3, 4, 5 in flight (5 <= capacity 5)
    with pytest.raises(SystemBlockedError) as refused:
        gov.entry("GET /a", 10.3, inbound=True)  # 6 in flight > 5
    assert refused.value.rule == "cpu"
    assert "capacity 5" in refused.value.reason
    # Outbound calls are never checked by adaptive protection.
    gov.entry("http://b", 10.3)
    assert len(in_flight) == 6
    gov.observe(cpu_usage=0.7)
    gov.entry("GET /a", 10.3, inbound=True)


def test_loop_lag_and_concurrency_triggers() -> None:
    gov = measured_governor(AdaptiveRule("lag", max_loop_lag_s=0.05))
    gov.observe(loop_lag_s=0.2)
    admit(gov, 10.3, 6)
    with pytest.raises(SystemBlockedError):
        gov.entry("GET /a", 10.3, inbound=True)
    gov.observe(loop_lag_s=0.01)
    gov.entry("GET /a", 10.3, inbound=True)

    gov = measured_governor(AdaptiveRule("lag", max_loop_lag_s=0.05))
    gov.load_adaptive_rules([AdaptiveRule("threads", max_concurrency=7)])
    admit(gov, 10.3, 8)  # the 8th sees 7 in flight: not above the trigger
    with pytest.raises(SystemBlockedError):
        gov.entry("GET /a", 10.3, inbound=True)  # 8 in flight > 7 and > capacity 5


def test_nothing_completed_admits_one_at_a_time_when_saturated() -> None:
    gov = Governor()
    gov.load_adaptive_rules([AdaptiveRule(max_cpu_usage=0.5)])
    gov.observe(cpu_usage=1.0)
    admit(gov, 1.0, 2)
    with pytest.raises(SystemBlockedError):
        gov.entry("GET /a", 1.0, inbound=True)


def test_rules_combine_to_the_tightest_and_invalid_ones_are_refused() -> None:
    gov = measured_governor(AdaptiveRule("loose", max_cpu_usage=0.95))
    gov.load_adaptive_rules([AdaptiveRule("loose", max_cpu_usage=0.95), AdaptiveRule("tight", max_cpu_usage=0.7)])
    gov.observe(cpu_usage=0.8)
    admit(gov, 10.3, 6)
    with pytest.raises(SystemBlockedError):
        gov.entry("GET /a", 10.3, inbound=True)
    with pytest.raises(RuleError) as bad:
        gov.load_adaptive_rules([AdaptiveRule("none")])
    assert bad.value.field == "max_loop_lag_s"
    with pytest.raises(RuleError) as bad:
        AdaptiveRule(max_cpu_usage=80).validate()
    assert bad.value.field == "max_cpu_usage"
    with pytest.raises(SystemBlockedError):  # the old rules stay in force
        gov.entry("GET /a", 10.3, inbound=True)
