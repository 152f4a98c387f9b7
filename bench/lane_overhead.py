"""What a lane costs per request, against plain untagged routing measured in the same run.

Lane path (one inbound request of a gray tester, routed onward):
  read the lane from `baggage` (it has none yet, but other members) ->
  coloring (three rules; the third, a header match, colors it) ->
  lane-aware selection among tagged instances -> balancer pick ->
  write the lane into the outbound `baggage`.
Anchor (base path): balancer pick among the base instances, no baggage.

Also printed: a request that already carries its lane (coloring skipped),
and each step alone. Last line: JSON with the figures (µs per request).

    .venv/bin/python bench/lane_overhead.py
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from tidegate.core.baggage import read_lane, with_lane
from tidegate.core.balancer import P2CBalancer
from tidegate.core.coloring import Coloring, ColoringRule, Condition, MatchKind, RequestKey, RequestView, Source, StringMatch
from tidegate.core.instance import Instance
from tidegate.core.lanes import LaneRouting, LaneRule, group_by_tag

ROUNDS = 5
LOOPS = 20_000


def per_call_us(fn: Callable[[], object]) -> float:
    """Best of ROUNDS, in µs per call (the best round is the least disturbed by neighbours)."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(LOOPS):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / LOOPS * 1e6


def main() -> None:
    instances = [Instance(id=f"b{i}", service="orders", host="127.0.0.1", port=9000 + i) for i in range(6)]
    instances += [Instance(id=f"g{i}", service="orders", host="127.0.0.1", port=9100 + i, tag="gray") for i in range(2)]
    groups = group_by_tag(instances)
    rng = random.Random(1).random
    balancers = {tag: P2CBalancer(members, random=rng) for tag, members in groups.items()}
    routing = LaneRouting([LaneRule("gray")])
    coloring = Coloring(
        [
            ColoringRule("blue", (Condition(RequestKey(Source.COOKIE, "beta"), StringMatch(MatchKind.EXACT, "1")),)),
            ColoringRule("green", (Condition(RequestKey(Source.PATH), StringMatch(MatchKind.PREFIX, "/internal/")),)),
            ColoringRule("gray", (Condition(RequestKey(Source.HEADER, "x-user-id"), StringMatch.regex(r"1\d{4}")),)),
        ]
    )
    inbound_baggage = "userId=12345,sessionId=8f14e45f;ttl=60,region=eu-west"
    headers = {"x-user-id": "12345", "cookie": "sid=abc; theme=dark", "baggage": inbound_baggage}
    colored_baggage = with_lane(inbound_baggage, "gray")

    def lane_request() -> str:
        view = RequestView("GET", "/api/orders/7", headers, "")
        lane = coloring.lane_for(view, rng, current_lane=read_lane(headers["baggage"]).lane)
        selection = routing.select("orders", groups, lane, rng)
        balancers[selection.tag].pick()
        return with_lane(headers["baggage"], selection.lane)

    def carried_lane_request() -> str:
        view = RequestView("GET", "/api/orders/7", headers, "")
        lane = coloring.lane_for(view, rng, current_lane=read_lane(colored_baggage).lane)
        selection = routing.select("orders", groups, lane, rng)
        balancers[selection.tag].pick()
        return with_lane(colored_baggage, selection.lane)

    base_balancer = balancers[""]

    def base_request() -> object:
        return base_balancer.pick()

    assert lane_request() == colored_baggage
    base_us = per_call_us(base_request)
    lane_us = per_call_us(lane_request)
    carried_us = per_call_us(carried_lane_request)
    steps = {
        "extract_us": per_call_us(lambda: read_lane(colored_baggage)),
        "coloring_us": per_call_us(lambda: coloring.lane_for(RequestView("GET", "/api/orders/7", headers, ""), rng)),
        "select_us": per_call_us(lambda: routing.select("orders", groups, "gray", rng)),
        "inject_us": per_call_us(lambda: with_lane(inbound_baggage, "gray")),
    }
    print(f"anchor  base routing (P2C pick among 6 base instances, no baggage): {base_us:7.3f} µs")
    print(f"lane    extract + color (3 rules) + select + pick + inject:         {lane_us:7.3f} µs  ({lane_us / base_us:.2f}x base)")
    print(f"lane    already carried (coloring skipped):                         {carried_us:7.3f} µs  ({carried_us / base_us:.2f}x base)")
    for name, value in steps.items():
        print(f"  step {name:<12} {value:7.3f} µs")
    figures = {
        "lane_us": round(lane_us, 3),
        "base_us": round(base_us, 3),
        "ratio": round(lane_us / base_us, 2),
        "carried_lane_us": round(carried_us, 3),
        **{k: round(v, 3) for k, v in steps.items()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
