"""The entry/exit pipeline and the rule managers: order of checks, statistics, atomic swaps."""

from __future__ import annotations

import pytest

from tidegate.core.adaptive import AdaptiveRule
from tidegate.core.breaker import OPEN, BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import Governor, RuleSet
from tidegate.core.hotspot import HotspotRule
from tidegate.errors import BlockedError, FlowBlockedError, RuleError


def test_entry_and_exit_record_statistics() -> None:
    gov = Governor()
    first = gov.entry("r", 1.0)
    second = gov.entry("r", 1.0)
    node = gov.stat_node("r")
    assert node.concurrency == 2
    first.exit(1.25)
    second.exit(1.125, error=True)
    second.exit(1.2, error=True)  # a second exit is ignored
    assert node.concurrency == 0
    window = node.second
    assert (window.pass_count(1_300), window.success_count(1_300), window.error_count(1_300)) == (2, 2, 1)
    assert window.rt_sum(1_300) == 375.0
    assert window.min_rt(1_300) == 125.0


def test_rt_is_measured_from_the_end_of_the_queue_wait() -> None:
    gov = Governor()
    gov.load_flow_rules([FlowRule("r", 2, behavior="throttle", max_queue_s=1.0)])
    gov.entry("r", 1.0).exit(1.0)
    queued = gov.entry("r", 1.0)
    assert queued.wait_s == 0.5
    queued.exit(1.75)
    assert gov.stat_node("r").second.rt_sum(1_750) == 250.0


def test_invalid_rule_set_is_refused_and_the_old_set_stays() -> None:
    gov = Governor()
    gov.load_flow_rules([FlowRule("r", 1, name="one")])
    with pytest.raises(RuleError) as bad:
        gov.load_flow_rules([FlowRule("r", 100, name="many"), FlowRule("r", 5, grade="bogus", name="typo")])
    assert bad.value.field == "grade"
    assert "typo" in str(bad.value)
    gov.entry("r", 1.0)
    with pytest.raises(FlowBlockedError) as refused:
        gov.entry("r", 1.0)
    assert refused.value.rule == "one"
    assert gov.rules.flow == (FlowRule("r", 1, name="one"),)


def test_whole_rule_set_swaps_all_kinds_or_none() -> None:
    gov = Governor()
    good = RuleSet(flow=(FlowRule("r", 1),), breakers=(BreakerRule("r", "error_count", 1, min_request_amount=0),))
    gov.load(good)
    with pytest.raises(RuleError):
        gov.load(RuleSet(flow=(), hotspot=(HotspotRule("r", "", 1),)))
    assert gov.rules == good
    gov.load(RuleSet())
    for _ in range(5):
        gov.entry("r", 1.0).exit(1.0, error=True)


def test_identical_rules_keep_their_state_across_reloads() -> None:
    gov = Governor()
    breaker = BreakerRule("r", "error_count", 1, name="b", min_request_amount=0)
    gov.load_breaker_rules([breaker])
    gov.entry("r", 1.0).exit(1.0, error=True)
    assert gov.breaker_states() == {"b": OPEN}
    gov.load_breaker_rules([breaker, BreakerRule("other", "error_count", 1, name="c")])
    assert gov.breaker_states()["b"] == OPEN


def test_checks_run_in_slot_order_and_a_refusal_counts_once() -> None:
    gov = Governor()
    gov.load(
        RuleSet(
            flow=(FlowRule("r", 1, name="flow"),),
            breakers=(BreakerRule("r", "error_count", 1, name="breaker", min_request_amount=0),),
            adaptive=(AdaptiveRule("sys", max_concurrency=1),),
        )
    )
    gov.entry("r", 1.0, inbound=True).exit(1.0, error=True)  # passes flow, opens the breaker
    with pytest.raises(FlowBlockedError):  # flow comes before the breaker
        gov.entry("r", 1.2, inbound=True)
    held = [gov.entry("x", 1.2, inbound=True) for _ in range(2)]
    with pytest.raises(BlockedError) as refused:  # adaptive comes before flow
        gov.entry("r", 1.2, inbound=True)
    assert refused.value.rule == "sys"
    assert gov.stat_node("r").second.block_count(1_200) == 2
    assert len(held) == 2


def test_counts_stay_exact_under_real_threads() -> None:
    import threading

    gov = Governor()
    gov.load_flow_rules([FlowRule("r", 1e9, grade="concurrency")])

    def calls() -> None:
        for _ in range(5000):
            gov.entry("r", 7.0).exit(7.0)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    node = gov.stat_node("r")
    assert node.concurrency == 0
    assert (node.second.pass_count(7_000), node.second.success_count(7_000)) == (20_000, 20_000)
