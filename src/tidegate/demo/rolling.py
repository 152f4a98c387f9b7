"""Scene: a rolling restart of `orders` under load, lossless offline on vs off.

Traffic runs while each `orders` instance is replaced in turn, the way a
Kubernetes rolling update does it: a new instance starts and registers, then
the old one gets SIGTERM. With lossless offline (the default) the old one
drains first: consumers are told at once and its in-flight requests finish.
The comparison runs `orders-legacy` with TIDEGATE_LOSSLESS=off and calls it
the way a consumer without a push does: from an instance list refreshed
every 30 s (Ribbon's default), so it keeps calling an instance that is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

import httpx
from rich.console import Console
from rich.table import Table

from tidegate.demo.cluster import Cluster, DemoError, Process
from tidegate.demo.traffic import Call, TrafficResult, instance_of, run_open_loop

APP = "tidegate.demo.services.orders:app"
TRAFFIC_S = 12.0
LIST_REFRESH_S = 30.0


def _roll(cluster: Cluster, service: str, old: list[Process], env: dict[str, str], first: int) -> None:
    """Replace every process in `old` in turn: start the new one, wait until it is routable, SIGTERM the old."""
    time.sleep(1.0)  # some traffic on the old instances first
    for n, process in enumerate(old, start=first):
        cluster.start_service(service, f"{service}-{n}", APP, env=env)
        cluster.wait_registered(service, len(old) + 1)
        time.sleep(0.5)  # consumers' directories follow the push
        process.terminate()
        cluster.processes.remove(process)  # gone on purpose: later waits must not take it for a crash


async def _traffic(call: Call, rate: float, roll: Callable[[], None]) -> TrafficResult:
    rolling = threading.Thread(target=roll, name="demo-rolling-restart")
    rolling.start()
    try:
        return await run_open_loop(call, rate, TRAFFIC_S)
    finally:
        await asyncio.to_thread(rolling.join)


def _with_lossless(cluster: Cluster, rate: float) -> TrafficResult:
    old = [p for p in cluster.processes if p.name in ("orders-1", "orders-2") and p.alive()]
    if len(old) != 2:
        raise DemoError("the rolling-restart scene needs orders-1 and orders-2 from scene 1")

    async def run() -> TrafficResult:
        async with httpx.AsyncClient(timeout=30.0) as client:

            async def call(i: int) -> str:
                return await instance_of(client, f"http://orders/orders/{i}")

            return await _traffic(call, rate, lambda: _roll(cluster, "orders", old, {}, 3))

    return asyncio.run(run())


def _without_lossless(cluster: Cluster, rate: float) -> TrafficResult:
    service, env = "orders-legacy", {"TIDEGATE_LOSSLESS": "off"}
    old = [cluster.start_service(service, f"{service}-{n}", APP, env=env) for n in (1, 2)]
    cluster.wait_registered(service, 2)
    servers: list[str] = []
    refreshed = [0.0]
    turn = itertools.count()

    async def run() -> TrafficResult:
        # Not through the agent: a plain client round-robining over a list it refreshes every 30 s.
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:

            async def call(i: int) -> str:
                if not servers or time.monotonic() - refreshed[0] > LIST_REFRESH_S:
                    servers[:] = [i.address for i in await asyncio.to_thread(cluster.client.instances, service) if i.state.routable]
                    refreshed[0] = time.monotonic()
                return await instance_of(client, f"http://{servers[next(turn) % len(servers)]}/orders/{i}")

            return await _traffic(call, rate, lambda: _roll(cluster, service, old, env, 3))

    return asyncio.run(run())


def run(cluster: Cluster, console: Console, rate: float) -> int:
    """Both rolling restarts and their table; returns the failed requests with lossless offline on."""
    console.rule("[bold]Scene — rolling restart of orders under load, lossless offline on vs off")
    console.print(f"{rate:g} req/s for {TRAFFIC_S:g} s while each of 2 instances is replaced (new one up, then SIGTERM to the old)")
    table = Table(title="failed requests through a rolling restart")
    for column in ("lossless offline", "consumer learns from", "sent", "failed", "p99"):
        table.add_column(column, justify="right")
    on = _with_lossless(cluster, rate)
    table.add_row("on", "push, direct notice, response header", str(on.sent), str(on.failed), f"{on.percentile_ms(0.99):.0f} ms")
    off = _without_lossless(cluster, rate)
    table.add_row(
        "off", f"a list refreshed every {LIST_REFRESH_S:g} s", str(off.sent), str(off.failed), f"{off.percentile_ms(0.99):.0f} ms"
    )
    console.print(table)
    for reason, count in off.failures.most_common(2):
        console.print(f"  off: {count} x {reason}")
    for reason, count in on.failures.most_common(2):
        console.print(f"  [red]on: {count} x {reason}[/]")
    return on.failed
