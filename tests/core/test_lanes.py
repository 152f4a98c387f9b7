"""Lane routing: tagged, base, fallback, strict; canary share and stickiness."""

from __future__ import annotations

import random

from tidegate.core.coloring import RequestKey, Source, sticky_bucket
from tidegate.core.instance import Instance
from tidegate.core.lanes import CanaryRule, LaneRouting, LaneRule, group_by_tag, select_lane_instances


def never() -> float:
    raise AssertionError("the random draw must not be used here")


def inst(name: str, tag: str = "", service: str = "orders") -> Instance:
    return Instance(id=name, service=service, host="127.0.0.1", port=8000, tag=tag)


BASE = (inst("b1"), inst("b2"))
GRAY = (inst("g1", "gray"),)
BLUE = (inst("u1", "blue"), inst("u2", "blue"))
ALL = BASE + GRAY + BLUE


def test_lane_goes_to_its_tagged_instances() -> None:
    assert select_lane_instances(ALL, "gray", strict=False) == (GRAY, "gray")
    assert select_lane_instances(ALL, "blue", strict=True) == (BLUE, "blue")


def test_lane_without_tagged_instances_falls_back_to_base() -> None:
    assert select_lane_instances(ALL, "green", strict=False) == (BASE, "")


def test_strict_lane_without_tagged_instances_gets_nothing() -> None:
    assert select_lane_instances(ALL, "green", strict=True) == ((), "green")


def test_base_traffic_never_reaches_tagged_instances() -> None:
    assert select_lane_instances(ALL, "", strict=False) == (BASE, "")
    assert select_lane_instances(GRAY + BLUE, "", strict=False) == ((), "")


def test_group_by_tag_keeps_order() -> None:
    assert group_by_tag(ALL) == {"": BASE, "gray": GRAY, "blue": BLUE}


def test_routing_applies_per_lane_strictness() -> None:
    routing = LaneRouting([LaneRule("gray", strict=True), LaneRule("blue")])
    groups = group_by_tag(BASE + BLUE)
    gray = routing.select("orders", groups, "gray", never)
    assert (gray.instances, gray.lane) == ((), "gray")
    assert routing.select("orders", groups, "blue", never).instances == BLUE
    assert routing.select("orders", group_by_tag(BASE), "blue", never).instances == BASE
    assert routing.is_strict("gray") and not routing.is_strict("blue")


def test_canary_share_over_many_sticky_keys() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 10.0, RequestKey(Source.HEADER, "x-user-id"))])
    canary = (inst("c1", "v2"),)
    groups = group_by_tag(BASE + canary)
    picks = [routing.select("orders", groups, "", never, sticky=f"user-{i}") for i in range(10_000)]
    to_canary = [p for p in picks if p.instances == canary]
    # CRC-32 is stable everywhere, so this is exact: 953 of 10 000 (9.53%, within 2 sigma of 10%).
    assert len(to_canary) == 953
    assert all(p.lane == "" and p.tag == "v2" for p in to_canary)
    assert all(p.instances == BASE and p.tag == "" for p in picks if p.instances != canary)


def test_canary_is_sticky() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 50.0)])
    groups = group_by_tag(BASE + (inst("c1", "v2"),))
    for key in ("alice", "bob", "carol", "dave"):
        expected = "v2" if sticky_bucket(key, "orders") < 5000 else ""
        assert {routing.select("orders", groups, "", never, sticky=key).tag for _ in range(20)} == {expected}


def test_canary_without_a_key_uses_the_draw() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 25.0)])
    groups = group_by_tag(BASE + (inst("c1", "v2"),))
    assert routing.select("orders", groups, "", lambda: 0.2499).tag == "v2"
    assert routing.select("orders", groups, "", lambda: 0.25).tag == ""
    rng = random.Random(3)
    hits = sum(routing.select("orders", groups, "", rng.random).tag == "v2" for _ in range(10_000))
    assert 2_300 < hits < 2_700


def test_canary_only_touches_base_traffic_of_its_service() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 100.0)])
    groups = group_by_tag(BASE + GRAY + (inst("c1", "v2"),))
    assert routing.select("orders", groups, "gray", never).instances == GRAY
    assert routing.select("payments", groups, "", never, sticky="x").instances == BASE


def test_canary_with_no_routable_tagged_instance_sends_its_share_to_base() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 100.0)])
    assert routing.select("orders", group_by_tag(BASE), "", never, sticky="x").instances == BASE


def test_several_canaries_split_the_buckets_in_order() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 10.0), CanaryRule("orders", "v3", 20.0)])
    groups = group_by_tag(BASE + (inst("c2", "v2"), inst("c3", "v3")))
    assert routing.select("orders", groups, "", lambda: 0.05).tag == "v2"
    assert routing.select("orders", groups, "", lambda: 0.15).tag == "v3"
    assert routing.select("orders", groups, "", lambda: 0.30).tag == ""


def test_canary_shares_beyond_one_hundred_percent_are_cut() -> None:
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 80.0), CanaryRule("orders", "v3", 80.0)])
    groups = group_by_tag(BASE + (inst("c2", "v2"), inst("c3", "v3")))
    assert routing.select("orders", groups, "", lambda: 0.9999).tag == "v3"
    assert routing.select("orders", groups, "", lambda: 0.5).tag == "v2"


def test_sticky_key_of_a_service() -> None:
    key = RequestKey(Source.COOKIE, "uid")
    routing = LaneRouting(canaries=[CanaryRule("orders", "v2", 5.0, key)])
    assert routing.sticky_key("orders") == key
    assert routing.sticky_key("payments") is None
    assert routing.has_canary("orders") and not routing.has_canary("payments")
