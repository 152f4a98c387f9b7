"""RabbitMQ (aio-pika) across lanes, with a real RabbitMQ and real consumers under `tidegate run`.

Base and gray `billing` consume queue Q bound to exchange `orders`. Messages
published from a gray request carry the lane. While no gray consumer is
live, the base takes gray messages; while one is, gray messages reach only
the gray consumer (through its queue Q@gray) and run in the gray lane; when
it is gone, the base takes them again. Every message is consumed exactly once.
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
RABBITMQ = os.environ.get("TIDEGATE_TEST_RABBITMQ")
GRAY = {"baggage": "tidegate.lane=gray"}

pytestmark = pytest.mark.skipif(not RABBITMQ, reason="TIDEGATE_TEST_RABBITMQ is not set (scripts/test.sh sets it)")
pytest.importorskip("aio_pika", reason="aio-pika is not installed (the oldest-versions venv holds no aio-pika)")


def start_billing(start: Any, control_url: str, name: str, queue: str, tag: str = "") -> tuple[int, Any]:
    port = free_port()
    program = start(
        name,
        "billing",
        uvicorn("--app-dir", LANE_APPS, "amqp_app:app", "--port", str(port)),
        control_url,
        tag=tag,
        env={"AMQP_URL": str(RABBITMQ), "QUEUE": queue},
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what=f"{name} to serve")
    return port, program


def publish(port: int, orders: list[str], headers: dict[str, str]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for order in orders:
            client.post("/publish", params={"order": order}, headers=headers).raise_for_status()


def consumed(port: int) -> dict[str, str]:
    body = httpx.get(f"http://127.0.0.1:{port}/consumed", timeout=10).json()
    assert len(body["orders"]) == len(set(body["orders"])), body["orders"]
    return dict(zip(body["orders"], body["lanes"]))


def live_tags(port: int) -> list[str]:
    return list(httpx.get(f"http://127.0.0.1:{port}/live-tags", timeout=10).json()["tags"])


def test_each_lane_consumes_its_own_messages_exactly_once_and_nothing_is_stranded(control_plane: Any, start: Any) -> None:
    queue = f"billing-{uuid.uuid4().hex[:8]}"
    base, _ = start_billing(start, control_plane.url, "billing-base", queue)

    before = [f"before-gray-{i}" for i in range(20)] + [f"before-base-{i}" for i in range(20)]
    publish(base, before[:20], GRAY)
    publish(base, before[20:], {})
    wait_until(lambda: set(consumed(base)) == set(before), what="the base to take every message")

    gray, gray_program = start_billing(start, control_plane.url, "billing-gray", queue, tag="gray")
    wait_until(lambda: live_tags(base) == ["", "gray"], what="the base to see the gray consumer")
    gray_orders = [f"gray-{i}" for i in range(60)]
    base_orders = [f"base-{i}" for i in range(60)]
    publish(base, gray_orders, GRAY)
    publish(base, base_orders, {})
    wait_until(lambda: set(gray_orders) <= set(consumed(gray)), what="the gray consumer to take the gray messages")
    wait_until(lambda: set(base_orders) <= set(consumed(base)), what="the base to take the base messages")
    assert consumed(gray) == {order: "gray" for order in gray_orders}  # in the gray lane, nothing else

    gray_program.proc.signal(signal.SIGTERM)  # the fixture reaps it (and keeps its log) at the end
    gray_program.proc.wait(timeout=30)
    wait_until(lambda: live_tags(base) == [""], what="the base to see the gray consumer gone")
    after = [f"after-gray-{i}" for i in range(20)]
    publish(base, after, GRAY)
    wait_until(lambda: set(after) <= set(consumed(base)), what="the base to take gray messages again")

    by_base = consumed(base)
    everything = Counter(list(by_base)) + Counter(gray_orders)
    assert set(everything) == set(before + gray_orders + base_orders + after)
    assert max(everything.values()) == 1
    assert {by_base[order] for order in before[:20] + after} == {"gray"}
    assert {by_base[order] for order in base_orders} == {""}
