"""Hot-spot parameter limits pinned with a fake clock: per value, exceptions, burst, LRU eviction."""

from __future__ import annotations

import pytest

from tidegate.core.governor import Governor
from tidegate.core.hotspot import HotspotLimiter, HotspotRule
from tidegate.errors import HotspotBlockedError, RuleError


def passes(gov: Governor, now: float, value: str, tries: int = 20) -> int:
    passed = 0
    for _ in range(tries):
        try:
            gov.entry("GET /items/{id}", now, args={"id": value}).exit(now)
        except HotspotBlockedError:
            continue
        passed += 1
    return passed


def test_one_hot_value_is_limited_others_are_not() -> None:
    gov = Governor()
    gov.load_hotspot_rules([HotspotRule("GET /items/{id}", "id", 2, name="items", exceptions=(("vip", 5), ("banned", 0)))])
    assert passes(gov, 1.0, "42") == 2
    with pytest.raises(HotspotBlockedError) as refused:
        gov.entry("GET /items/{id}", 1.5, args={"id": "42"})
    assert refused.value.rule == "items"
    assert refused.value.retry_after_s == pytest.approx(0.501)
    assert passes(gov, 1.0, "7") == 2
    assert passes(gov, 1.0, "vip") == 5
    assert passes(gov, 1.0, "banned") == 0
    # No value for the parameter: the rule does not apply.
    gov.entry("GET /items/{id}", 1.0, args={"other": "42"})
    gov.entry("GET /items/{id}", 1.0)


def test_tokens_come_back_only_after_more_than_the_duration() -> None:
    limiter = HotspotLimiter(HotspotRule("r", "p", 2, burst=1))
    assert [limiter.try_pass("a", 1_000) for _ in range(4)] == [True, True, True, False]  # threshold 2 + burst 1
    assert limiter.try_pass("a", 2_000) is False  # exactly one duration later: still nothing added
    # 1001 ms later: 1001 x 2 // 1000 = 2 tokens added to 0, this call spends one.
    assert [limiter.try_pass("a", 2_001) for _ in range(3)] == [True, True, False]


def test_lru_evicts_the_least_recently_used_value() -> None:
    limiter = HotspotLimiter(HotspotRule("r", "p", 1, capacity=2))
    assert limiter.try_pass("a", 1_000)
    assert limiter.try_pass("b", 1_000)
    assert not limiter.try_pass("a", 1_000)  # touches a: b is now the least recently used
    assert limiter.try_pass("c", 1_000)  # evicts b
    assert list(limiter.values) == ["a", "c"]
    assert not limiter.try_pass("a", 1_000)
    assert limiter.try_pass("b", 1_000)  # b comes back with a full bucket, evicting c
    assert list(limiter.values) == ["a", "b"]


def test_default_capacity_follows_sentinel() -> None:
    assert HotspotRule("r", "p", 1).cache_size == 4000
    assert HotspotRule("r", "p", 1, duration_s=100).cache_size == 200_000


def test_invalid_hotspot_rules_name_their_field() -> None:
    with pytest.raises(RuleError) as bad:
        HotspotRule("r", "p", -1).validate()
    assert bad.value.field == "threshold"
    with pytest.raises(RuleError) as bad:
        HotspotRule("r", "p", 1, exceptions=(("x", -2),)).validate()
    assert bad.value.field == "exceptions"
