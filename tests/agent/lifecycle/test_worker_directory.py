"""Every worker process keeps its own live directory: calls by service name route from each one."""

from __future__ import annotations

import httpx

from tests.agent.conftest import gunicorn, uvicorn
from tests.support.procs import free_port, wait_until


def _items_up(control_plane, start) -> int:
    port = free_port()
    start("items", "items", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url)
    wait_until(lambda: [i["port"] for i in control_plane.instances("items")] == [port], what="items to register")
    return port


def _calls_route_from_every_worker(port: int, workers: int) -> None:
    seen: set[int] = set()

    def call() -> bool:
        answer = httpx.get(f"http://127.0.0.1:{port}/via/42", timeout=10).json()
        assert answer["status"] == 200 and answer["body"] == {"item": "42"}, answer
        seen.add(answer["pid"])
        return len(seen) == workers

    wait_until(call, interval=0.01, what=f"answers from all {workers} workers")


def test_forked_gunicorn_workers_route_by_service_name(control_plane, start) -> None:
    _items_up(control_plane, start)
    port = free_port()
    start("frontend", "frontend", gunicorn("-w", "2", "-b", f"127.0.0.1:{port}", "frontend_flask:app"), control_plane.url)
    wait_until(lambda: len(control_plane.instances("frontend")) == 1, what="frontend to register")
    _calls_route_from_every_worker(port, 2)


def test_spawned_uvicorn_workers_route_by_service_name(control_plane, start) -> None:
    _items_up(control_plane, start)
    port = free_port()
    start("frontend-async", "frontend-async", uvicorn("frontend_async:app", "--port", str(port), "--workers", "2"), control_plane.url)
    wait_until(lambda: len(control_plane.instances("frontend-async")) == 1, what="frontend to register")
    _calls_route_from_every_worker(port, 2)
