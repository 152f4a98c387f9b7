"""Scene 1: a `frontend` calling `orders` by service name, balanced over live instances.

Two instances of each service run unmodified under `tidegate run`. The demo
itself calls `http://frontend/...` by name too (the explicit API), and prints
how the calls spread over every instance along the chain.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tidegate.demo.cluster import Cluster, DemoError
from tidegate.demo.traffic import TrafficResult, run_open_loop


def start_services(cluster: Cluster, console: Console) -> None:
    for n in (1, 2):
        cluster.start_service("orders", f"orders-{n}", "tidegate.demo.services.orders:app")
    for n in (1, 2):
        cluster.start_service("frontend", f"frontend-{n}", "tidegate.demo.services.frontend:app")
    cluster.wait_registered("orders", 2)
    cluster.wait_registered("frontend", 2)
    console.print("[green]✓[/] 2 x orders and 2 x frontend registered (each under `tidegate run`, code unchanged)")


async def send_traffic(rate: float, seconds: float, console: Console) -> TrafficResult:
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def call(i: int) -> str:
            response = await client.get(f"http://frontend/checkout/{i}")
            body = response.json()
            if response.status_code != 200:
                raise DemoError(body.get("error", f"HTTP {response.status_code}"))
            return f"{body['frontend']} -> {body['orders']}"

        with Progress(
            TextColumn("sending {task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            task = progress.add_task(f"{int(rate * seconds)} requests at {rate:g}/s to http://frontend/", total=1.0)
            return await run_open_loop(call, rate, seconds, lambda done: progress.update(task, completed=done))


def report(result: TrafficResult, console: Console) -> None:
    table = Table(title="How the calls spread (frontend instance -> orders instance)")
    table.add_column("path")
    table.add_column("requests", justify="right")
    table.add_column("share", justify="right")
    for path, count in sorted(result.outcomes.items()):
        table.add_row(path, str(count), f"{count / max(result.sent, 1):.0%}")
    console.print(table)
    per_service: Counter[str] = Counter()
    for path, count in result.outcomes.items():
        for hop in path.split(" -> "):
            per_service[hop] += count
    console.print("per instance: " + ", ".join(f"{name} {count}" for name, count in sorted(per_service.items())))
    console.print(
        f"sent {result.sent}, failed {result.failed}, p50 {result.percentile_ms(0.5):.1f} ms, p99 {result.percentile_ms(0.99):.1f} ms"
    )
    for reason, count in result.failures.most_common(3):
        console.print(f"  [red]{count} x {reason}[/]")


def run(cluster: Cluster, console: Console, rate: float, seconds: float) -> TrafficResult:
    console.rule("[bold]Scene 1 — service-name routing")
    start_services(cluster, console)
    result = asyncio.run(send_traffic(rate, seconds, console))
    report(result, console)
    return result
