"""Scene: the gateway in front — routing, a lane colored at the edge, a canary by weight, a drain behind it.

`tidegate gateway` (fed by the control plane's watch) routes `/order/` to
`cart`, the first of a 3-hop chain `cart -> pricing -> stock` (the lanes
scene's shop app), with gray versions of cart and stock and a `canary`
version of cart. One TrafficLane document colors a request gray at the
gateway when it has the header `x-lane: gray` or the cookie `lane=gray`; the
lane rides in `baggage` through every hop. The route's canary sends 10% of
the rest to cart's canary version (this hop only: it is not a lane). Then
the base cart is restarted the way a rolling update does it while traffic
goes through the gateway: 0 failed. `bench/gateway_lanes.py` and the tests
use the same pieces.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable

import httpx
from rich.console import Console
from rich.table import Table

from tidegate.demo.cluster import Cluster, Process, free_port

SHOP = "tidegate.demo.services.shop:app"
LANE = {
    "apiVersion": "traffic.opensergo.io/v1alpha1",
    "kind": "TrafficLane",
    "metadata": {"name": "gray-at-gateway"},
    "spec": {
        "lane": {"name": "gray"},
        "selector": {"app": "gateway"},
        "rules": [{"http": {"headers": {"x-lane": "gray"}}}, {"http": {"cookies": {"lane": "gray"}}}],
    },
}
CANARY_WEIGHT = 10
#: The prefix of a failure answered by a hop of the chain itself (its call downstream failed), not by the gateway.
HOP = "hop: "


def route(weight: int = CANARY_WEIGHT) -> dict[str, object]:
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "GatewayRoute",
        "metadata": {"name": "shop"},
        "spec": {"match": {"path": {"prefix": "/order/"}}, "service": "cart", "canary": {"tag": "canary", "weight": weight}},
    }


GRAY_PATH = "cart:gray -> pricing:base -> stock:gray"
BASE_PATH = "cart:base -> pricing:base -> stock:base"
CANARY_PATH = "cart:canary -> pricing:base -> stock:base"
CLASSES = ("header x-lane: gray", "cookie lane=gray", "plain")


def request_class(i: int) -> tuple[str, dict[str, str]]:
    if i % 4 == 0:
        return CLASSES[0], {"x-lane": "gray"}
    if i % 4 == 1:
        return CLASSES[1], {"cookie": f"lane=gray; uid=u{i}"}
    return CLASSES[2], {}


def start_chain(cluster: Cluster) -> None:
    """cart (+gray, +canary) -> pricing -> stock (+gray), each under `tidegate run`."""
    cluster.start_service("stock", "stock", SHOP)
    cluster.start_service("stock", "stock-gray", SHOP, tag="gray")
    cluster.start_service("pricing", "pricing", SHOP, env={"SHOP_NEXT": "stock"})
    cluster.start_service("cart", "cart-1", SHOP, env={"SHOP_NEXT": "pricing"})
    cluster.start_service("cart", "cart-gray", SHOP, tag="gray", env={"SHOP_NEXT": "pricing"})
    cluster.start_service("cart", "cart-canary", SHOP, tag="canary", env={"SHOP_NEXT": "pricing"})
    for service, count in (("stock", 2), ("pricing", 1), ("cart", 3)):
        cluster.wait_registered(service, count)


def start_gateway(cluster: Cluster, name: str = "gateway") -> tuple[Process, str]:
    """`tidegate gateway` on free ports, fed by the control plane; (its process, its URL)."""
    port, admin = free_port(), free_port()
    args = [sys.executable, "-m", "tidegate", "gateway", "--port", str(port), "--admin-port", str(admin)]
    args += ["--control", cluster.control_url, "--token", cluster.token, "--snapshot", str(cluster.workdir / f"{name}.snapshot")]
    process = cluster._spawn(name, args, port=port)
    cluster._wait(lambda: httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200, process, "the gateway to be ready")
    return process, f"http://127.0.0.1:{port}"


def wait_for_rules(cluster: Cluster, url: str) -> None:
    def colored() -> bool:
        body = httpx.get(f"{url}/order/probe", headers={"x-lane": "gray"}, timeout=5).json()
        return " -> ".join(body.get("served", [])) == GRAY_PATH

    cluster._wait(colored, None, "the route and the lane rule to reach the gateway, and gray to be routable")


async def send(url: str, total: int, concurrency: int = 32) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """`total` requests through the gateway, the classes in turn; (class, path) counts and failures."""
    served: Counter[tuple[str, str]] = Counter()
    failures: Counter[str] = Counter()
    indices = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in indices:
            kind, headers = request_class(i)
            try:
                response = await client.get(f"/order/o{i}", headers=headers)
                if response.status_code != 200:
                    failures[f"HTTP {response.status_code}: {response.text[:80]}"] += 1
                    continue
                served[(kind, " -> ".join(response.json()["served"]))] += 1
            except httpx.HTTPError as error:
                failures[f"{type(error).__name__}: {error}"] += 1

    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return served, failures


def leaks(served: Counter[tuple[str, str]]) -> int:
    """Requests off their lane: a gray one anywhere but the gray versions, a plain one on any gray version."""
    wrong = 0
    for (kind, path), count in served.items():
        expected = (GRAY_PATH,) if kind != CLASSES[2] else (BASE_PATH, CANARY_PATH)
        if path not in expected:
            wrong += count
    return wrong


def canary_share(served: Counter[tuple[str, str]]) -> tuple[int, int]:
    """(plain requests that went to the canary, plain requests)."""
    plain = sum(count for (kind, _), count in served.items() if kind == CLASSES[2])
    return served[(CLASSES[2], CANARY_PATH)], plain


def roll_cart(cluster: Cluster, restarts: int, on_restart: Callable[[int], None] = lambda n: None) -> None:
    """Replace the base cart `restarts` times (start a new one, wait until routable, SIGTERM the old)."""
    for n in range(restarts):
        old = next(p for p in cluster.processes if p.name.startswith("cart-") and p.name[5:].isdigit())
        number = int(old.name[5:]) + 1
        cluster.start_service("cart", f"cart-{number}", SHOP, env={"SHOP_NEXT": "pricing"})
        cluster.wait_registered("cart", 4)
        time.sleep(0.5)
        old.terminate()
        cluster.processes.remove(old)
        on_restart(n)


async def load_during(url: str, rate: float, action: Callable[[], None]) -> tuple[int, Counter[str]]:
    """Open-loop plain requests at `rate` while `action` runs; (sent, failures)."""
    failures: Counter[str] = Counter()
    sent = 0
    tasks: set[asyncio.Task[None]] = set()
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:

        async def one(i: int) -> None:
            try:
                response = await client.get(f"/order/r{i}")
                if response.status_code != 200:
                    # An answer with "served" came from a hop (its own call downstream failed), not the gateway.
                    where = HOP if '"served"' in response.text else ""
                    failures[f"{where}HTTP {response.status_code}: {response.text[:80]}"] += 1
            except httpx.HTTPError as error:
                failures[f"{type(error).__name__}: {error}"] += 1

        async def act() -> None:
            try:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(action)
                await asyncio.sleep(0.5)
            finally:
                done.set()

        actor = asyncio.create_task(act())
        start = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await actor
        if tasks:
            await asyncio.gather(*tasks)
    return sent, failures


def run(cluster: Cluster, console: Console, rate: float, total: int = 600, restarts: int = 2) -> int:
    """Run the scene, then stop its processes and remove its rules; the number of failed requests."""
    console.rule("[bold]Scene — the gateway in front (routing, a lane colored at the edge, a canary, a drain)")
    before = list(cluster.processes)
    try:
        return _run(cluster, console, rate, total, restarts)
    finally:
        for process in reversed([p for p in cluster.processes if p not in before]):
            process.terminate()
            cluster.processes.remove(process)
        for kind, name in (("TrafficLane", "gray-at-gateway"), ("GatewayRoute", "shop")):
            try:
                cluster.client.delete_rule("default", kind, name)
            except Exception:  # never applied; the control plane stops at the end anyway
                pass


def _run(cluster: Cluster, console: Console, rate: float, total: int, restarts: int) -> int:
    start_chain(cluster)
    console.print("[green]✓[/] cart (+gray, +canary) -> pricing -> stock (+gray) registered")
    cluster.client.apply_rules([route(), LANE])
    _, url = start_gateway(cluster)
    console.print(f"gateway {url}: GatewayRoute/shop /order/ -> cart (canary: {CANARY_WEIGHT}% to cart:canary)")
    console.print("TrafficLane/gray-at-gateway: header x-lane=gray or cookie lane=gray, colored at the gateway")
    wait_for_rules(cluster, url)
    served, failures = asyncio.run(send(url, total))
    table = Table(title="Which versions served each request class (through the gateway)")
    table.add_column("request class")
    table.add_column("path (service:version)")
    table.add_column("requests", justify="right")
    for (kind, path), count in sorted(served.items()):
        table.add_row(kind, path, str(count))
    console.print(table)
    to_canary, plain = canary_share(served)
    console.print(
        f"lane leaks: {leaks(served)}; canary: {to_canary} of {plain} plain requests ({100 * to_canary / max(1, plain):.1f}%, weight {CANARY_WEIGHT}%)"
    )
    sent, drain_failures = asyncio.run(
        load_during(url, rate, lambda: roll_cart(cluster, restarts, lambda n: console.print(f"  cart restarted ({n + 1}/{restarts})")))
    )
    console.print(f"rolling restart of cart behind the gateway ({restarts} restarts): sent {sent}, failed {sum(drain_failures.values())}")
    failures.update(drain_failures)
    failed = sum(count for reason, count in failures.items() if not reason.startswith(HOP))
    for reason, count in failures.most_common(3):
        console.print(f"  [red]{count} x {reason}[/]")
    chain = sum(failures.values()) - failed
    console.print(
        f"sent {total + sent}, failed {failed}" + (f" (and {chain} answered by a hop whose own call downstream failed)" if chain else "")
    )
    return failed + leaks(served)
