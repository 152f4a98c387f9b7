"""Scene: scale-out under steady load, warm-up on vs off.

A `catalog` service whose first requests are slow (cache misses, a lazy
import) goes from 2 to 4 instances under open-loop traffic, twice: with
warm-up off (new instances take their full share at once) and on (a
warm-up request loads the cache before registration, and consumers ramp the
new instances over a window). The window is 8 s here, shortened from the
120 s default so the scene fits in about 30 s.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from rich.console import Console
from rich.table import Table

from tidegate.demo.cluster import Cluster
from tidegate.demo.traffic import TrafficResult, instance_of, run_open_loop

WINDOW_S = 8.0
STEADY_S = 3.0
AFTER_S = 8.0
SLOW_MS = 40  # a cache miss costs this much
SETTINGS: dict[str, dict[str, object]] = {
    "off": {"warmupWindowSeconds": 0, "prewarmSqlAlchemy": False, "prewarmRedis": False, "prewarmHttp": False},
    "on": {"warmupWindowSeconds": WINDOW_S, "warmupRequests": "GET /catalog"},
}


async def _phases(cluster: Cluster, service: str, rate: float) -> tuple[TrafficResult, TrafficResult]:
    """Traffic for STEADY_S on 2 instances, then 2 more start and traffic runs AFTER_S more."""
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def call(i: int) -> str:
            return await instance_of(client, f"http://{service}/price/{i * 7919}")

        steady = await run_open_loop(call, rate, STEADY_S)
        for n in (3, 4):
            cluster.start_service(service, f"{service}-{n}", "tidegate.demo.services.catalog:app")
        after = await run_open_loop(call, rate, AFTER_S)
    return steady, after


def _one(cluster: Cluster, mode: str, rate: float) -> tuple[TrafficResult, TrafficResult]:
    service = f"catalog-{mode}"
    cluster.client.apply_rules(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "ServiceSettings",
            "metadata": {"name": service},
            "spec": {"service": service, **SETTINGS[mode]},
        }
    )
    first = [cluster.start_service(service, f"{service}-{n}", "tidegate.demo.services.catalog:app") for n in (1, 2)]
    cluster.wait_registered(service, 2)
    for process in first:  # they stand for instances that have served for hours: caches loaded
        httpx.get(f"http://127.0.0.1:{process.port}/catalog", timeout=10).raise_for_status()
    time.sleep(0.5)  # the demo client's directory sees them
    return asyncio.run(_phases(cluster, service, rate))


def run(cluster: Cluster, console: Console, rate: float) -> int:
    """Both runs and their table; returns the failed requests."""
    console.rule("[bold]Scene — scale-out 2 -> 4 under load, warm-up off vs on")
    console.print(f"catalog: cache misses cost 40 ms; warm-up window {WINDOW_S:g} s (demo-short; default 120 s)")
    table = Table(
        title=f"latency at {rate:g} req/s: {STEADY_S:g} s on 2 instances, then {AFTER_S:g} s after starting 2 more "
        f"(p99 x: after/steady; >={SLOW_MS}ms: slow requests after; to new: share the new instances took)"
    )
    for column in ("warm-up", "steady p50", "steady p99", "after p50", "after p99", "p99 x", f">={SLOW_MS}ms", "to new"):
        table.add_column(column, justify="right")
    failed = 0
    for mode in ("off", "on"):
        steady, after = _one(cluster, mode, rate)
        failed += steady.failed + after.failed
        new = sum(count for name, count in after.outcomes.items() if name.endswith(("-3", "-4")))
        ratio = after.percentile_ms(0.99) / max(steady.percentile_ms(0.99), 0.001)
        table.add_row(
            mode,
            f"{steady.percentile_ms(0.5):.1f} ms",
            f"{steady.percentile_ms(0.99):.1f} ms",
            f"{after.percentile_ms(0.5):.1f} ms",
            f"{after.percentile_ms(0.99):.1f} ms",
            f"{ratio:.2f}x",
            str(sum(1 for latency in after.latencies_s if latency * 1000 >= SLOW_MS)),
            f"{new / max(after.sent, 1):.0%}",
        )
    console.print(table)
    return failed
