"""Redis Streams across lanes, with a real Redis and real consumers under `tidegate run`.

Base `billing` (redis.asyncio) and gray `billing` (sync redis.Redis in a
thread) consume one stream in group `billing`. Messages published from a
gray request carry the lane. While no gray consumer is live, the base takes
gray messages; while one is, each lane takes only its own; when it is gone,
the base takes them again. Every message is consumed exactly once.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import uvicorn
from tests.support.procs import free_port, http_ok, wait_until

LANE_APPS = str(Path(__file__).resolve().parent.parent / "lane_apps")
REDIS = os.environ.get("TIDEGATE_TEST_REDIS")
GRAY = {"baggage": "tidegate.lane=gray"}

pytestmark = pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (scripts/test.sh sets it)")


def start_billing(start: Any, control_url: str, name: str, stream: str, tag: str = "", client: str = "async") -> tuple[int, Any]:
    port = free_port()
    program = start(
        name,
        "billing",
        uvicorn("tidegate.demo.services.billing:app", "--port", str(port)),
        control_url,
        tag=tag,
        env={"REDIS_URL": str(REDIS), "STREAM": stream, "CLIENT": client},
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what=f"{name} to serve")
    return port, program


def publish(port: int, orders: list[str], headers: dict[str, str]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for order in orders:
            client.post("/publish", params={"order": order}, headers=headers).raise_for_status()


def consumed(port: int) -> list[str]:
    return list(httpx.get(f"http://127.0.0.1:{port}/consumed", timeout=10).json()["orders"])


def live_tags(port: int) -> list[str]:
    return list(httpx.get(f"http://127.0.0.1:{port}/live-tags", timeout=10).json()["tags"])


def test_each_lane_consumes_its_own_messages_exactly_once_and_nothing_is_stranded(control_plane: Any, start: Any) -> None:
    stream = f"orders-{uuid.uuid4().hex[:8]}"
    base, _ = start_billing(start, control_plane.url, "billing-base", stream)

    # 1. no gray consumer: the base takes gray messages too
    before = [f"before-gray-{i}" for i in range(20)] + [f"before-base-{i}" for i in range(20)]
    publish(base, before[:20], GRAY)
    publish(base, before[20:], {})
    wait_until(lambda: sorted(consumed(base)) == sorted(before), what="the base to take every message")

    # 2. a gray consumer goes live: from now on each lane takes only its own
    gray, gray_program = start_billing(start, control_plane.url, "billing-gray", stream, tag="gray", client="sync")
    wait_until(lambda: live_tags(base) == ["", "gray"], what="the base to see the gray consumer")
    gray_orders = [f"gray-{i}" for i in range(60)]
    base_orders = [f"base-{i}" for i in range(60)]
    publish(base, gray_orders, GRAY)
    publish(base, base_orders, {})
    wait_until(lambda: set(gray_orders) <= set(consumed(gray)), what="the gray consumer to take the gray messages")
    wait_until(lambda: set(base_orders) <= set(consumed(base)), what="the base to take the base messages")
    assert sorted(consumed(gray)) == sorted(gray_orders)  # it read the stream from the start and took no earlier one

    # 3. the gray consumer goes away: the base takes gray messages again
    gray_program.proc.signal(signal.SIGTERM)  # the fixture reaps it (and keeps its log) at the end
    gray_program.proc.wait(timeout=30)
    wait_until(lambda: live_tags(base) == [""], what="the base to see the gray consumer gone")
    after = [f"after-gray-{i}" for i in range(20)]
    publish(base, after, GRAY)
    wait_until(lambda: set(after) <= set(consumed(base)), what="the base to take gray messages again")

    everything = Counter(consumed(base)) + Counter(sorted(gray_orders))
    assert set(everything) == set(before + gray_orders + base_orders + after)
    assert max(everything.values()) == 1, [order for order, n in everything.items() if n > 1]
    assert not set(gray_orders) & set(consumed(base))
