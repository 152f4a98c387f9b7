"""Scene: full-link gray — `frontend -> cart -> pricing -> stock`, with gray versions of cart and stock only.

One `TrafficLane` document colors a request gray at the frontend when it
has the header `x-lane: gray`, or for a sticky 10% of users by `x-user-id`.
Gray requests reach every gray version on their path and the base version
of every other service; cart publishes each order to an `orders` stream
(on a `redis-server` the demo starts: `tidegate.demo.brokers` installs it when
missing), consumed by base and gray `billing`.
The scene prints, per request class, which versions served it and which
billing took its messages.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from rich.console import Console
from rich.table import Table

from tidegate.demo.cluster import Cluster, DemoError, free_port

GRAY_LANE = {
    "apiVersion": "traffic.opensergo.io/v1alpha1",
    "kind": "TrafficLane",
    "metadata": {"name": "gray"},
    "spec": {
        "lane": {"name": "gray"},
        "selector": {"app": "frontend"},
        "rules": [
            {"http": {"headers": {"x-lane": "gray"}}},
            {"http": {"headers": {"x-user-id": {"present": True}}}, "percent": 10, "stickyKey": {"header": "x-user-id"}},
        ],
    },
}
CLASSES = ("header x-lane: gray", "x-user-id (10% sticky)", "plain")
SHOP = "tidegate.demo.services.shop:app"
BILLING = "tidegate.demo.services.billing:app"


def _headers(i: int) -> tuple[str, dict[str, str]]:
    kind = CLASSES[i % 3]
    if i % 3 == 0:
        return kind, {"x-lane": "gray"}
    if i % 3 == 1:
        return kind, {"x-user-id": f"user-{i // 3}"}
    return kind, {}


def start_services(cluster: Cluster, console: Console, redis_server: str | None) -> str:
    """Start the shop (and Redis with billing when there is a `redis_server`); the frontend's URL."""
    stream_env: dict[str, str] = {}
    if redis_server:
        port = free_port()
        cluster._spawn("redis", [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"], port=port)
        stream_env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "STREAM": "orders"}
        cluster.start_service("billing", "billing", BILLING, env=stream_env)
        cluster.start_service("billing", "billing-gray", BILLING, tag="gray", env=stream_env)
    cluster.start_service("stock", "stock", SHOP)
    cluster.start_service("stock", "stock-gray", SHOP, tag="gray")
    cluster.start_service("pricing", "pricing", SHOP, env={"SHOP_NEXT": "stock"})
    cluster.start_service("cart", "cart", SHOP, env={"SHOP_NEXT": "pricing", **stream_env})
    cluster.start_service("cart", "cart-gray", SHOP, tag="gray", env={"SHOP_NEXT": "pricing", **stream_env})
    frontend = cluster.start_service("frontend", "frontend-lanes", SHOP, env={"SHOP_NEXT": "cart"})
    for service, count in (("stock", 2), ("pricing", 1), ("cart", 2), ("frontend", 1)) + ((("billing", 2),) if stream_env else ()):
        cluster.wait_registered(service, count)
    console.print(
        "[green]✓[/] frontend, cart (+gray), pricing, stock (+gray)" + (", billing (+gray)" if stream_env else "") + " registered"
    )
    return f"http://127.0.0.1:{frontend.port}"


async def send(frontend: str, total: int) -> tuple[Counter[tuple[str, str]], Counter[str], dict[str, str]]:
    served: Counter[tuple[str, str]] = Counter()
    failures: Counter[str] = Counter()
    order_class: dict[str, str] = {}
    next_index = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in next_index:
            kind, headers = _headers(i)
            order = f"o{i}"
            order_class[order] = kind
            try:
                response = await client.get(f"/order/{order}", headers=headers)
                body = response.json()
                if response.status_code != 200:
                    failures[body.get("error", f"HTTP {response.status_code}")] += 1
                    continue
                served[(kind, " -> ".join(body["served"]))] += 1
            except httpx.HTTPError as error:
                failures[f"{type(error).__name__}: {error}"] += 1

    async with httpx.AsyncClient(base_url=frontend, timeout=15, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))
    return served, failures, order_class


def wait_for_lane(cluster: Cluster, frontend: str) -> None:
    def colored() -> bool:
        body = httpx.get(f"{frontend}/order/probe", headers={"x-lane": "gray"}, timeout=5).json()
        return "cart:gray" in body.get("served", [])

    cluster._wait(colored, None, "the TrafficLane rule to reach the frontend and gray cart to be routable")


def consumed(cluster: Cluster, name: str) -> list[str]:
    process = next(p for p in cluster.processes if p.name == name)
    return list(httpx.get(f"http://127.0.0.1:{process.port}/consumed", timeout=5).json()["orders"])


def run(cluster: Cluster, console: Console, redis_server: str | None, total: int = 900) -> int:
    """Run the scene, then stop its processes and remove its rule (later scenes reuse
    service names like `frontend`); the number of failed requests. Without a
    `redis_server` (see `tidegate.demo.brokers`) the stream part is left out."""
    console.rule("[bold]Scene — full-link gray (lanes)")
    before = list(cluster.processes)
    try:
        return _run(cluster, console, redis_server, total)
    finally:
        for process in reversed([p for p in cluster.processes if p not in before]):
            process.terminate()
            cluster.processes.remove(process)
        try:
            cluster.client.delete_rule("default", "TrafficLane", "gray")
        except Exception:  # the rule may never have been applied; the control plane stops at the end anyway
            pass


def _run(cluster: Cluster, console: Console, redis_server: str | None, total: int) -> int:
    frontend = start_services(cluster, console, redis_server)
    cluster.client.apply_rules(GRAY_LANE)
    console.print("applied TrafficLane/gray: header x-lane=gray, or 10% of users by x-user-id, colored at the frontend")
    wait_for_lane(cluster, frontend)
    served, failures, order_class = asyncio.run(send(frontend, total))

    table = Table(title="Which versions served each request class")
    table.add_column("request class")
    table.add_column("path (service:version)")
    table.add_column("requests", justify="right")
    for (kind, path), count in sorted(served.items()):
        table.add_row(kind, path, str(count))
    console.print(table)
    if any(p.name == "billing" for p in cluster.processes):

        def all_consumed() -> bool:
            return set(order_class) <= set(consumed(cluster, "billing")) | set(consumed(cluster, "billing-gray"))

        try:
            cluster._wait(all_consumed, None, "billing to consume every order", timeout=30)
        except DemoError as error:
            console.print(f"[yellow]{error}[/]")
        messages = Table(title="Who consumed each class's orders (stream `orders`)")
        messages.add_column("request class")
        messages.add_column("billing (base)", justify="right")
        messages.add_column("billing (gray)", justify="right")
        by_base = Counter(order_class.get(o, "probe") for o in consumed(cluster, "billing"))
        by_gray = Counter(order_class.get(o, "probe") for o in consumed(cluster, "billing-gray"))
        for kind in CLASSES:
            messages.add_row(kind, str(by_base[kind]), str(by_gray[kind]))
        console.print(messages)
    failed = sum(failures.values())
    for reason, count in failures.most_common(3):
        console.print(f"  [red]{count} x {reason}[/]")
    console.print(f"sent {total}, failed {failed}")
    return failed
