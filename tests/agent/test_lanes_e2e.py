"""Full-link gray end to end: frontend -> cart -> pricing -> stock, gray cart and stock, an orders stream.

Real processes: a control plane; frontend, cart, pricing, stock (base) and
cart, stock (tagged gray), each uvicorn under `tidegate run`; cart publishes
every order to a Redis stream consumed by base and gray `billing`. Rules: a
`TrafficLane` colors a request gray by header `x-lane: gray` or for a sticky
10% of users by `x-user-id` (requests with one), at the frontend only.

10,000 requests: a third with the header, a third with a user id, a third
plain. Every response names the version of each hop that served it; every
consumer says which orders it took. Midway the gray stock is stopped: gray
requests fall back to base stock with no failure. Then the lane is made
strict and a gray request gets the clear error (at pricing, the first hop
with no gray version: a strict lane never falls back to base instances).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.agent.conftest import TOKEN, uvicorn
from tests.support.procs import free_port, http_ok, wait_until
from tidegate.client.control import ControlClient
from tidegate.core.coloring import sticky_bucket

REDIS = os.environ.get("TIDEGATE_TEST_REDIS")
REQUESTS = 10_000
CONCURRENCY = 24
GRAY_CHAIN = ["frontend:base", "cart:gray", "pricing:base", "stock:gray"]
FALLBACK_CHAIN = ["frontend:base", "cart:gray", "pricing:base", "stock:base"]
BASE_CHAIN = ["frontend:base", "cart:base", "pricing:base", "stock:base"]

pytestmark = pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (scripts/test.sh sets it)")


def gray_lane(strict: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": "gray"},
        "spec": {
            "lane": {"name": "gray", "strict": strict},
            "selector": {"app": "frontend"},
            "rules": [
                {"http": {"headers": {"x-lane": "gray"}}},
                {"http": {"headers": {"x-user-id": {"present": True}}}, "percent": 10, "stickyKey": {"header": "x-user-id"}},
            ],
        },
    }


def request_of(i: int) -> tuple[dict[str, str], bool]:
    """Headers of request i and whether it belongs in the gray lane."""
    kind = i % 3
    if kind == 0:
        return {"x-lane": "gray"}, True
    if kind == 1:
        user = f"user-{i // 3}"
        return {"x-user-id": user}, sticky_bucket(user, "gray") < 1000
    return {}, False


class Shop:
    def __init__(self, control_url: str, start: Any) -> None:
        self.stream = f"orders-{uuid.uuid4().hex[:8]}"
        self.programs: dict[str, Any] = {}
        self.ports: dict[str, int] = {}
        redis_env = {"REDIS_URL": str(REDIS), "STREAM": self.stream}
        hops = [
            ("billing", "", "billing", "", {}),
            ("billing-gray", "gray", "billing", "", {"CLIENT": "sync"}),
            ("stock", "", "stock", "", {}),
            ("stock-gray", "gray", "stock", "", {}),
            ("pricing", "", "pricing", "stock", {}),
            ("cart", "", "cart", "pricing", {}),
            ("cart-gray", "gray", "cart", "pricing", {}),
            ("frontend", "", "frontend", "cart", {}),
        ]
        for name, tag, service, next_hop, extra in hops:
            port = free_port()
            module = "tidegate.demo.services.billing:app" if service == "billing" else "tidegate.demo.services.shop:app"
            env = {"SHOP_NEXT": next_hop, **extra}
            if service in ("billing", "cart"):
                env.update(redis_env)
            # Idle keep-alive connections stay open for the run: a server closing one just as a client
            # reuses it fails that request (an HTTP/1.1 race no retry of ours should hide here).
            args = uvicorn(module, "--port", str(port), "--no-access-log", "--timeout-keep-alive", "300")
            self.programs[name] = start(name, service, args, control_url, tag=tag, env=env)
            self.ports[name] = port
        for name, port in self.ports.items():
            wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what=f"{name} to serve")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def consumed(self, name: str) -> list[str]:
        return list(httpx.get(f"{self.url(name)}/consumed", timeout=10).json()["orders"])


def stop(proc: Any) -> None:
    """SIGTERM, as an orchestrator would; the fixture still reaps the group at the end."""
    proc.signal(signal.SIGTERM)
    proc.wait(timeout=30)


async def send_all(shop: Shop, ids: list[str], stop_gray_stock_at: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    stop_began = threading.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(ids)):
        queue.put_nowait(i)
    stopper: list[asyncio.Task[None]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if i == stop_gray_stock_at:
                stop_began.set()
                stopper.append(asyncio.create_task(asyncio.to_thread(stop, shop.programs["stock-gray"].proc)))
            headers, _ = request_of(i)
            try:
                response = await client.get(f"/order/{ids[i]}", headers=headers)
                results[ids[i]] = (response.status_code, response.json(), stop_began.is_set())
            except httpx.HTTPError as error:
                results[ids[i]] = (0, {"error": repr(error)}, stop_began.is_set())

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=shop.url("frontend"), timeout=30, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    await asyncio.gather(*stopper)
    return results


def test_gray_lane_end_to_end_no_leak_fallback_and_strict(control_plane: Any, start: Any) -> None:
    shop = Shop(control_plane.url, start)
    with ControlClient(control_plane.url, TOKEN) as plane:
        plane.apply_rules(gray_lane())

        def routes_settled() -> bool:
            gray = httpx.get(f"{shop.url('frontend')}/order/probe-g", headers={"x-lane": "gray"}, timeout=10).json()
            base = httpx.get(f"{shop.url('frontend')}/order/probe-b", timeout=10).json()
            return gray.get("served") == GRAY_CHAIN and base.get("served") == BASE_CHAIN

        wait_until(routes_settled, timeout=60, what="every hop to know the instances and the lane rule")
        wait_until(
            lambda: httpx.get(f"{shop.url('billing')}/live-tags", timeout=5).json()["tags"] == ["", "gray"],
            what="base billing to see the gray consumer",
        )

        run = uuid.uuid4().hex[:6]
        ids = [f"{run}-{i}" for i in range(REQUESTS)]
        results = asyncio.run(send_all(shop, ids, stop_gray_stock_at=REQUESTS // 2))

        failures = {order: result for order, result in results.items() if result[0] != 200}
        assert not failures, list(failures.items())[:5]
        gray_orders, base_orders, leaks = set(), set(), []
        for i, order in enumerate(ids):
            _, is_gray = request_of(i)
            _, body, after_stop = results[order]
            if is_gray:
                gray_orders.add(order)
                allowed = [GRAY_CHAIN, FALLBACK_CHAIN] if after_stop else [GRAY_CHAIN]
            else:
                base_orders.add(order)
                allowed = [BASE_CHAIN]
            if body["served"] not in allowed:
                leaks.append((i, order, body["served"], after_stop))
        assert leaks == [], leaks[:5]
        colored_by_user = sum(1 for i in range(1, REQUESTS, 3) if request_of(i)[1])
        assert 200 < colored_by_user < 470  # about 10% of 3,333 users
        fallbacks = sum(1 for order in gray_orders if results[order][1]["served"] == FALLBACK_CHAIN)
        assert fallbacks > 0  # the gray stock did go away while gray traffic ran

        def consumed_everything() -> bool:
            taken = set(shop.consumed("billing")) | set(shop.consumed("billing-gray"))
            return set(ids) <= taken

        wait_until(consumed_everything, timeout=60, what="billing to consume every order")
        by_base = Counter(order for order in shop.consumed("billing") if order in results)
        by_gray = Counter(order for order in shop.consumed("billing-gray") if order in results)
        assert set(by_gray) == gray_orders
        assert set(by_base) == base_orders
        assert max((by_base + by_gray).values()) == 1

        plane.apply_rules(gray_lane(strict=True))

        def strict_refusal() -> str:
            response = httpx.get(f"{shop.url('frontend')}/order/strict", headers={"x-lane": "gray"}, timeout=10)
            return str(response.json().get("error", "")) if response.status_code == 502 else ""

        error = wait_until(strict_refusal, what="the strict lane to refuse base instances")
        # strict: no hop of a gray request falls back, so the first without a gray version refuses
        assert "no live instance of service 'pricing' in lane 'gray'" in str(error)
