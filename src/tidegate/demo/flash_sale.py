"""Scene: a flash sale, a burst at 5x the warehouse's capacity, without and with a flow rule.

`storefront` calls `warehouse` by service name; the warehouse can reserve 20
items a second. The burst (100 requests a second for 3 s) runs twice:
  - without rules the warehouse queues everything: its latency climbs past
    the storefront's 1 s timeout, and most purchases fail slowly;
  - with a ConcurrencyLimitStrategy of 2 on `GET /reserve/{item}` pushed from
    the control plane (one call working, one waiting), the warehouse sheds the
    excess at once with 429: what it admits stays fast, and the storefront
    answers every shed call at once.
Between the two runs the swamped warehouse is replaced by a fresh instance, so
the second run does not inherit the first one's backlog.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.table import Table

from tidegate.demo.cluster import Cluster, DemoError, Process
from tidegate.demo.traffic import TrafficResult, run_open_loop

CAPACITY_PER_S = 20
BURST_PER_S = 5 * CAPACITY_PER_S
BURST_S = 3.0
RULE = {
    "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
    "kind": "FaultToleranceRule",
    "metadata": {"name": "flash-sale-warehouse"},
    "spec": {
        "selector": {"app": "warehouse"},
        "targets": [{"targetResourceName": "GET /reserve/{item}"}],
        "strategies": [{"kind": "ConcurrencyLimitStrategy", "spec": {"maxConcurrency": 2}}],
    },
}


@dataclass
class Phase:
    """What the demo client saw of one burst: the storefront's answers and, from its bodies, the warehouse's."""

    result: TrafficResult = field(default_factory=TrafficResult)
    warehouse: dict[str, int] = field(default_factory=dict)
    warehouse_ms: list[float] = field(default_factory=list)

    def share(self, outcome: str) -> float:
        return self.result.outcomes.get(outcome, 0) / max(self.result.sent, 1)


async def _burst() -> Phase:
    phase = Phase()
    async with httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=1000)) as client:

        async def call(i: int) -> str:
            response = await client.get(f"http://storefront/buy/{i}")
            body = response.json()
            phase.warehouse[body["warehouse"]] = phase.warehouse.get(body["warehouse"], 0) + 1
            if body["warehouse"] != "shed":
                phase.warehouse_ms.append(body["warehouse_ms"])
            return {200: "ok", 429: "shed"}.get(response.status_code, "error")

        phase.result = await run_open_loop(call, BURST_PER_S, BURST_S)
    return phase


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _warehouse(cluster: Cluster, name: str) -> Process:
    """A fresh warehouse instance, once it is the only routable one."""
    process = cluster.start_service("warehouse", name, "tidegate.demo.services.warehouse:app")
    deadline = time.monotonic() + 60
    while [i.port for i in cluster.client.instances("warehouse") if i.state.routable] != [process.port]:
        if not process.alive():
            raise DemoError(f"{name} exited:\n{process.tail()}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {name} to register")
        time.sleep(0.1)
    return process


def run(cluster: Cluster, console: Console) -> int:
    """Run the scene; the number of storefront calls that failed slowly with the rule in force."""
    console.rule("[bold]Scene — flash sale: 5x the warehouse's capacity, without and with a flow rule")
    first = _warehouse(cluster, "warehouse-1")
    cluster.start_service("storefront", "storefront-1", "tidegate.demo.services.storefront:app")
    cluster.wait_registered("storefront", 1)
    console.print(
        f"[green]✓[/] warehouse (capacity {CAPACITY_PER_S}/s) and storefront registered; burst: {BURST_PER_S}/s for {BURST_S:g} s"
    )
    without = asyncio.run(_burst())

    first.terminate(timeout=2.0)  # deregisters at once; its backlog is dropped with it
    _warehouse(cluster, "warehouse-2")
    (stored,) = cluster.client.apply_rules(RULE)
    console.print(f"[green]✓[/] rule {stored.name} (revision {stored.revision}) pushed: at most 2 concurrent GET /reserve/{{item}}")
    _wait_rule(cluster)
    with_rule = asyncio.run(_burst())

    table = Table(title="flash sale: the caller (storefront) and the protected service (warehouse)")
    for column in ("", "", "ok", "shed fast (429)", "errors", "p99 ms"):
        table.add_column(column, justify="right")
    for label, phase in (("no rules", without), ("with rule", with_rule)):
        sent = max(phase.result.sent, 1)
        failed = phase.result.outcomes.get("error", 0) + phase.result.failed
        bad = phase.warehouse.get("timeout", 0) + phase.warehouse.get("error", 0)
        table.add_row(
            label,
            "storefront",
            f"{phase.share('ok'):.0%}",
            f"{phase.share('shed'):.0%}",
            f"{failed / sent:.0%}",
            f"{phase.result.percentile_ms(0.99):.0f}",
        )
        table.add_row(
            "",
            "warehouse",
            f"{phase.warehouse.get('served', 0) / sent:.0%}",
            f"{phase.warehouse.get('shed', 0) / sent:.0%}",
            f"{bad / sent:.0%}",
            f"{_p99(phase.warehouse_ms):.0f}",
        )
    console.print(table)
    return with_rule.result.outcomes.get("error", 0) + with_rule.result.failed


def _wait_rule(cluster: Cluster) -> None:
    """Until the warehouse answers a burst with a 429 (the rule reached it through the watch stream)."""

    async def shed_seen() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as client:
            answers = await asyncio.gather(*(client.get(f"http://warehouse/reserve/probe-{i}") for i in range(40)))
        return any(a.status_code == 429 for a in answers)

    for _ in range(50):
        if asyncio.run(shed_seen()):
            return
    raise DemoError("the flow rule did not reach the warehouse")
