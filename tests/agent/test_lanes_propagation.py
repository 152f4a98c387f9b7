"""The lane survives fan-out: asyncio.gather, run_in_executor, a thread pool, a thread, a BackgroundTask.

One real app under `tidegate run` (uvicorn) calls its own `/echo` through
httpx from each kind of task or thread; `/echo` answers the `baggage` it got.
A request without a lane right after one with a lane shows that pool threads
do not keep an earlier request's lane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import uvicorn
from tests.support.procs import free_port, http_ok, wait_until

LANE_APPS = str(Path(__file__).resolve().parent / "lane_apps")
GRAY = {"baggage": "user=7,tidegate.lane=gray"}


@pytest.fixture
def app_port(control_plane: Any, start: Any) -> int:
    port = free_port()
    start(
        "propagation",
        "prober",
        uvicorn("--app-dir", LANE_APPS, "propagation_app:app", "--port", str(port)),
        control_plane.url,
        env={"APP_PORT": str(port)},
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what="the app to serve")
    return port


def probe(port: int, via: str, headers: dict[str, str]) -> list[str]:
    response = httpx.get(f"http://127.0.0.1:{port}/probe", params={"via": via}, headers=headers, timeout=20)
    response.raise_for_status()
    return list(response.json()["seen"])


@pytest.mark.parametrize("via", ["gather", "executor", "pool", "thread"])
def test_the_lane_follows_tasks_and_threads(app_port: int, via: str) -> None:
    for _ in range(3):  # several rounds, so pool threads started by one request serve the next
        gray = probe(app_port, via, GRAY)
        assert gray and all(seen == "user=7,tidegate.lane=gray" for seen in gray), gray
        base = probe(app_port, via, {})
        assert base and all(seen == "" for seen in base), base


def test_the_lane_follows_a_starlette_background_task(app_port: int) -> None:
    def background_saw() -> list[str]:
        return list(httpx.get(f"http://127.0.0.1:{app_port}/background", timeout=5).json()["seen"])

    for headers, expected in ((GRAY, "user=7,tidegate.lane=gray"), ({}, "")):
        assert probe(app_port, "background", headers) == []
        wait_until(background_saw, what="the background task's call")
        assert background_saw() == [expected]
