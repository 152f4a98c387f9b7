"""Flow control pinned with a fake clock: reject, warm-up ramp, queueing, relate, chain, origin."""

from __future__ import annotations

import pytest

from tidegate.core.flow import FlowRule, WarmUpCalculator
from tidegate.core.governor import Governor
from tidegate.errors import FlowBlockedError, RuleError


def governor(*rules: FlowRule) -> Governor:
    gov = Governor()
    gov.load_flow_rules(rules)
    return gov


def passes(gov: Governor, resource: str, now: float, tries: int = 100, **kw: str) -> int:
    """How many of `tries` calls at `now` pass (each exits at once, RT 0)."""
    passed = 0
    for _ in range(tries):
        try:
            gov.entry(resource, now, **kw).exit(now)
        except FlowBlockedError:
            continue
        passed += 1
    return passed


def test_qps_reject_counts_the_sliding_second() -> None:
    gov = governor(FlowRule("r", 5, name="five"))
    assert passes(gov, "r", 10.0, tries=3) == 3
    assert passes(gov, "r", 10.6, tries=5) == 2
    with pytest.raises(FlowBlockedError) as refused:
        gov.entry("r", 10.7)
    assert refused.value.rule == "five"
    assert refused.value.retry_after_s == pytest.approx(0.3)
    # At 11.0 the bucket of 10.0-10.5 has left the window: its 3 calls are free again.
    assert passes(gov, "r", 11.0) == 3
    assert gov.stat_node("r").second.block_count(11_000) == 1 + 3 + 97


def test_stat_duration_counts_calls_per_that_many_seconds() -> None:
    gov = governor(FlowRule("r", 3, stat_duration_s=10))
    assert passes(gov, "r", 100.0, tries=2) == 2
    assert passes(gov, "r", 105.0) == 1
    assert passes(gov, "r", 109.9) == 0
    assert passes(gov, "r", 110.0) == 2  # the calls of second 100 left the 10 s window


def test_concurrency_grade_counts_calls_in_flight() -> None:
    gov = governor(FlowRule("r", 2, grade="concurrency"))
    first = gov.entry("r", 1.0)
    gov.entry("r", 1.0)
    with pytest.raises(FlowBlockedError):
        gov.entry("r", 1.0)
    first.exit(1.5)
    gov.entry("r", 1.5)


def test_warm_up_ramp_after_cold_start() -> None:
    # threshold 10, warm-up 10 s, cold factor 3:
    # warning_token = 10*10/2 = 50, max_token = 50 + 2*10*10/4 = 100, slope = 2/10/50 = 0.004.
    calc = WarmUpCalculator(10, 10, 3)
    assert (calc.warning_token, calc.max_token) == (50, 100)
    assert calc.slope == pytest.approx(0.004)
    gov = governor(FlowRule("r", 10, warmup_s=10))
    # Saturated every second; allowed = 1 / ((stored - 50) * 0.004 + 0.1), stored drained by last second's passes:
    # stored 100 -> 3.33, 97 -> 3.47, 94 -> 3.62, 91 -> 3.79, 88 -> 3.97, 85 -> 4.17, 81 -> 4.46, 77 -> 4.81,
    # 73 -> 5.21, 68 -> 5.81, 63 -> 6.58, 57 -> 7.81, 50 -> 10 (warning line reached), then 10 for good.
    expected = [3, 3, 3, 3, 3, 4, 4, 4, 5, 5, 6, 7, 10, 10, 10]
    got = [passes(gov, "r", 100.0 + second) for second in range(len(expected))]
    assert got == expected


def test_warm_up_cools_down_again_when_traffic_is_light() -> None:
    gov = governor(FlowRule("r", 10, warmup_s=10))
    for second in range(14):
        passes(gov, "r", 100.0 + second)
    assert passes(gov, "r", 114.0) == 10
    # 20 idle seconds (fewer than 10 // 3 calls a second) refill the bucket to max_token: cold again.
    assert passes(gov, "r", 134.0) == 3


def test_throttling_queues_a_burst_at_exact_waits() -> None:
    gov = governor(FlowRule("r", 4, behavior="throttle", max_queue_s=1.0, name="pace"))
    waits = [gov.entry("r", 10.0).wait_s for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(FlowBlockedError) as refused:
        gov.entry("r", 10.0)
    assert refused.value.retry_after_s == 0.25
    assert gov.entry("r", 11.0).wait_s == 0.25  # the queue ends at 11.0; the next slot is 11.25
    assert gov.entry("r", 20.0).wait_s == 0.0


def test_warm_up_with_queueing_paces_at_the_warming_rate() -> None:
    # Cold: the rate is 10/3 per second, so calls are 0.3 s apart; at most 1 s of queue.
    gov = governor(FlowRule("r", 10, warmup_s=10, behavior="throttle", max_queue_s=1.0))
    waits = [gov.entry("r", 50.0).wait_s for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.3, 0.6, 0.9])
    with pytest.raises(FlowBlockedError):
        gov.entry("r", 50.0)


def test_relate_limits_one_resource_by_anothers_traffic() -> None:
    gov = governor(FlowRule("write", 2, strategy="relate", ref_resource="read"))
    assert passes(gov, "read", 5.0, tries=2) == 2
    assert passes(gov, "write", 5.0) == 0
    assert passes(gov, "read", 5.0, tries=3) == 3  # read itself is not limited
    assert passes(gov, "write", 6.0) == 100


def test_chain_limits_only_calls_through_its_entrance() -> None:
    gov = governor(FlowRule("db", 1, strategy="chain", ref_resource="GET /orders"))
    assert passes(gov, "db", 5.0, context="GET /orders") == 1
    assert passes(gov, "db", 5.0, tries=10, context="GET /users") == 10
    assert passes(gov, "db", 5.0, tries=10) == 10


def test_origin_named_other_and_default() -> None:
    gov = governor(
        FlowRule("r", 1, origin="app-a"),
        FlowRule("r", 2, origin="other"),
        FlowRule("r", 6),
    )
    assert passes(gov, "r", 5.0, origin="app-a") == 1  # app-a has its own limit of 1
    assert passes(gov, "r", 5.0, origin="app-b") == 2  # any other named caller: 2 each
    assert passes(gov, "r", 5.0, origin="app-c") == 2
    # The resource total is now 5; "default" counts every caller: one more call passes.
    assert passes(gov, "r", 5.0) == 1


def test_invalid_rule_names_its_field() -> None:
    with pytest.raises(RuleError) as bad:
        FlowRule("r", 5, behavior="throttle", grade="concurrency").validate()
    assert bad.value.field == "behavior"
    with pytest.raises(RuleError) as bad:
        FlowRule("r", 1, warmup_s=1).validate()
    assert bad.value.field == "warmup_s"
    with pytest.raises(RuleError) as bad:
        FlowRule("r", 5, strategy="relate").validate()
    assert bad.value.field == "ref_resource"
