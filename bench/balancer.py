"""Balancer bench: pick cost, spread, and behaviour with one slow instance.

Anchor: `random.choice` on the same tuple of instances, measured in the same
run (the cheapest balancer there is, and blind to weights and load). Figures:

- pick cost in microseconds with 3, 10 and 100 instances, for P2C
  least-in-flight, smooth weighted round robin and the anchor, and the ratio
  of each to the anchor;
- the router's cost for a host that is not a service (what every call to a
  plain host pays), against a bare `dict.get`;
- what the httpx instrumentor adds to a call to a plain host (not a
  service), against the same call unpatched (an in-memory transport, so only
  the client's own work is timed);
- spread: max/min share over 100,000 sequential picks among 10 equal-weight
  instances (1.0 is perfect);
- one slow instance: a simulated run with an injected clock (Poisson arrivals
  at 1,000/s over 10 instances, 9 answer in 20 ms and one in 200 ms): the slow
  instance's share of calls, the mean latency, and the in-flight imbalance
  (the slow instance's mean in flight over a fast one's).

Run: `.venv/bin/python bench/balancer.py`. The last line is one JSON object.
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections import Counter
from collections.abc import Callable

import httpx

from tidegate.agent import offline
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.httpx import INSTRUMENTOR as HTTPX
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.balancer import InFlight, P2CBalancer, RoundRobinBalancer
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance

SIZES = (3, 10, 100)


def instances(count: int) -> tuple[Instance, ...]:
    return tuple(Instance(id=f"i{k}", service="orders", host="127.0.0.1", port=9000 + k) for k in range(count))


def per_call_us(call: Callable[[], object], loops: int) -> float:
    """Best of 5 timings of `loops` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(loops):
            call()
        best = min(best, time.perf_counter() - started)
    return best / loops * 1e6


def pick_costs() -> dict[str, dict[int, float]]:
    costs: dict[str, dict[int, float]] = {"p2c": {}, "wrr": {}, "random_choice": {}}
    for size in SIZES:
        members = instances(size)
        loops = 50_000 if size < 100 else 10_000
        rng = random.Random(1)
        p2c = P2CBalancer(members, InFlight(), rng.random)
        wrr = RoundRobinBalancer(members, InFlight(), rng.random)
        choice = rng.choice
        costs["p2c"][size] = per_call_us(p2c.pick, loops)
        costs["wrr"][size] = per_call_us(wrr.pick, loops)
        costs["random_choice"][size] = per_call_us(lambda: choice(members), loops)
    return costs


def miss_costs() -> tuple[float, float]:
    """(router.route for a plain host, dict.get) in nanoseconds."""
    directory = ServiceDirectory()
    directory.replace(1, list(instances(3)))
    router = OutboundRouter(directory, rng=random.Random(1))
    table = {"orders": 1}
    route = router.route
    get = table.get
    loops = 100_000
    return per_call_us(lambda: route("127.0.0.1", 8080), loops) * 1000, per_call_us(lambda: get("127.0.0.1"), loops) * 1000


def httpx_plain_host_costs() -> tuple[float, float]:
    """(unpatched, patched) microseconds per `Client.get` of a plain host."""
    runtime = AgentRuntime(config=AgentConfig(service="bench"))
    runtime.directory.replace(1, list(instances(3)))
    runtime.router = OutboundRouter(runtime.directory, rng=random.Random(1))
    offline.install(runtime)  # as under the agent: the patched send checks for drain notices
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=b"ok")))
    get = client.get
    loops = 3_000
    unpatched = patched = float("inf")
    try:
        for _ in range(3):  # alternate, so drift on a shared machine hits both alike
            unpatched = min(unpatched, per_call_us(lambda: get("http://127.0.0.1:8080/x"), loops))
            HTTPX.instrument(runtime)
            patched = min(patched, per_call_us(lambda: get("http://127.0.0.1:8080/x"), loops))
            HTTPX.uninstrument()
    finally:
        HTTPX.uninstrument()
        client.close()
    return unpatched, patched


def spread(pick: Callable[[], Instance], picks: int = 100_000) -> float:
    counts = Counter(pick().id for _ in range(picks))
    return max(counts.values()) / min(counts.values())


def spreads() -> dict[str, float]:
    members = instances(10)
    rng = random.Random(2)
    p2c = P2CBalancer(members, InFlight(), rng.random)
    wrr = RoundRobinBalancer(members, InFlight(), rng.random)
    return {
        "p2c": spread(lambda: p2c.pick()),  # type: ignore[arg-type, return-value]
        "wrr": spread(lambda: wrr.pick()),  # type: ignore[arg-type, return-value]
        "random_choice": spread(lambda: rng.choice(members)),
    }


def slow_instance_run(kind: str, seed: int = 3, calls: int = 40_000) -> dict[str, float]:
    """Simulated time: arrivals and completions on an injected clock, no sleeping."""
    members = instances(10)
    service_time = {m.id: 0.020 for m in members}
    slow = members[0].id
    service_time[slow] = 0.200
    rng = random.Random(seed)
    in_flight = InFlight()
    if kind == "p2c":
        balancer: P2CBalancer | RoundRobinBalancer | None = P2CBalancer(members, in_flight, rng.random)
    elif kind == "wrr":
        balancer = RoundRobinBalancer(members, in_flight, rng.random)
    else:
        balancer = None
    now = 0.0
    completions: list[tuple[float, str]] = []
    counts: Counter[str] = Counter()
    latency_sum = 0.0
    for _ in range(calls):
        now += rng.expovariate(1000.0)
        while completions and completions[0][0] <= now:
            in_flight.release(heapq.heappop(completions)[1])
        chosen = balancer.pick() if balancer is not None else rng.choice(members)
        assert chosen is not None
        in_flight.acquire(chosen.id)
        heapq.heappush(completions, (now + service_time[chosen.id], chosen.id))
        counts[chosen.id] += 1
        latency_sum += service_time[chosen.id]
    fast_mean_calls = sum(counts[m.id] for m in members[1:]) / (len(members) - 1)
    # Little's law: mean in flight = arrival rate x time in service, per instance.
    imbalance = (counts[slow] * service_time[slow]) / (fast_mean_calls * service_time[members[1].id])
    return {
        "slow_share": counts[slow] / calls,
        "mean_latency_ms": latency_sum / calls * 1000,
        "inflight_imbalance": imbalance,
    }


def main() -> None:
    costs = pick_costs()
    print("pick cost (us per pick; ratio to random.choice on the same tuple)")
    print(f"{'instances':>10} {'p2c':>8} {'wrr':>8} {'choice':>8} {'p2c/x':>7} {'wrr/x':>7}")
    for size in SIZES:
        p2c, wrr, anchor = costs["p2c"][size], costs["wrr"][size], costs["random_choice"][size]
        print(f"{size:>10} {p2c:>8.3f} {wrr:>8.3f} {anchor:>8.3f} {p2c / anchor:>7.1f} {wrr / anchor:>7.1f}")
    miss_ns, dict_ns = miss_costs()
    print(f"router.route for a plain host: {miss_ns:.0f} ns; dict.get: {dict_ns:.0f} ns (x{miss_ns / dict_ns:.1f})")
    httpx_plain, httpx_patched = httpx_plain_host_costs()
    print(
        f"httpx Client.get of a plain host: {httpx_plain:.1f} us unpatched, {httpx_patched:.1f} us patched (x{httpx_patched / httpx_plain:.3f})"
    )
    spread_of = spreads()
    print("spread, 10 equal instances, 100k picks, max/min share: " + ", ".join(f"{k} {v:.3f}" for k, v in spread_of.items()))
    runs = {kind: slow_instance_run(kind) for kind in ("p2c", "wrr", "random_choice")}
    print("one slow instance (10x) of 10, 1000/s Poisson, simulated clock:")
    for kind, run in runs.items():
        print(
            f"  {kind:>13}: slow share {run['slow_share']:.3f}, mean latency {run['mean_latency_ms']:.1f} ms, "
            f"in-flight imbalance x{run['inflight_imbalance']:.2f}"
        )
    figures = {
        "p2c_us": {str(k): round(v, 3) for k, v in costs["p2c"].items()},
        "wrr_us": {str(k): round(v, 3) for k, v in costs["wrr"].items()},
        "random_choice_us": {str(k): round(v, 3) for k, v in costs["random_choice"].items()},
        "p2c_vs_anchor_10": round(costs["p2c"][10] / costs["random_choice"][10], 2),
        "wrr_vs_anchor_10": round(costs["wrr"][10] / costs["random_choice"][10], 2),
        "route_miss_ns": round(miss_ns),
        "dict_get_ns": round(dict_ns),
        "httpx_plain_host_us": round(httpx_plain, 2),
        "httpx_plain_host_patched_us": round(httpx_patched, 2),
        "httpx_plain_host_patched_vs_unpatched": round(httpx_patched / httpx_plain, 3),
        "spread_max_min": {k: round(v, 3) for k, v in spread_of.items()},
        "slow_instance": {k: {f: round(x, 3) for f, x in run.items()} for k, run in runs.items()},
        "default": "p2c",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
