"""Lanes colored at the gateway through a 3-hop chain, and the route's canary by weight: the bar's figures.

The demo scene's setup (`tidegate.demo.gateway`): a control plane, `cart (+gray, +canary) -> pricing ->
stock (+gray)` each under `tidegate run`, `tidegate gateway` fed by the watch with GatewayRoute/shop
(`/order/` -> cart, canary 10% by weight to cart's `canary` version) and a TrafficLane coloring gray at
the gateway by header `x-lane: gray` or cookie `lane=gray`. Then `--requests` requests (default 10,000;
a quarter by header, a quarter by cookie, half plain) count every request served off its lane (a gray
one not on cart:gray -> pricing:base -> stock:gray, a plain one on any gray version), and
`--canary-requests` plain requests (default 10,000) measure the canary's share.

    python bench/gateway_lanes.py [--requests 10000] [--canary-requests 10000]

Last line: JSON {"requests", "leaks", "failed", "canary_requests", "canary_share_pct", "canary_weight_pct"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from tidegate.demo import gateway as scene
from tidegate.demo.cluster import Cluster


async def plain(url: str, total: int, concurrency: int = 32) -> tuple[Counter[str], int]:
    served: Counter[str] = Counter()
    failed = 0
    indices = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        for i in indices:
            try:
                response = await client.get(f"/order/c{i}")
                if response.status_code != 200:
                    failed += 1
                    continue
                served[" -> ".join(response.json()["served"])] += 1
            except httpx.HTTPError:
                failed += 1

    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return served, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--canary-requests", type=int, default=10_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-gateway-lanes-"))
    cluster = Cluster(workdir)
    try:
        cluster.start_control()
        scene.start_chain(cluster)
        cluster.client.apply_rules([scene.route(), scene.LANE])
        _, url = scene.start_gateway(cluster)
        scene.wait_for_rules(cluster, url)
        served, failures = asyncio.run(scene.send(url, args.requests))
        for (kind, path), count in sorted(served.items()):
            print(f"{kind:22} {path:44} {count:6}")
        leaks = scene.leaks(served)
        failed = sum(failures.values())
        print(f"lanes through 3 hops: {args.requests} requests, {leaks} leaks, {failed} failed", flush=True)
        canary, canary_failed = asyncio.run(plain(url, args.canary_requests))
        share = 100 * canary[scene.CANARY_PATH] / max(1, sum(canary.values()))
        print(
            f"canary by weight {scene.CANARY_WEIGHT}%: {canary[scene.CANARY_PATH]} of {sum(canary.values())} plain requests = {share:.2f}% "
            f"(bar: {scene.CANARY_WEIGHT} +- 1.5); other paths: {dict(canary)}; failed {canary_failed}"
        )
        figures = {
            "requests": args.requests,
            "leaks": leaks,
            "failed": failed + canary_failed,
            "canary_requests": args.canary_requests,
            "canary_share_pct": round(share, 2),
            "canary_weight_pct": scene.CANARY_WEIGHT,
        }
    finally:
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))
    ok = figures["leaks"] == 0 and figures["failed"] == 0 and abs(figures["canary_share_pct"] - scene.CANARY_WEIGHT) <= 1.5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
