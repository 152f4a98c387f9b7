"""Lossless offline with real servers, signals and sockets: a drained instance loses no request.

Two `orders` instances and a consumer (calling `http://orders` through the
agent) run under `tidegate run`. SIGTERM to a server process, or `POST
/offline` on its admin endpoint, drains it: a slow request already in it ends
with 200, every call the consumer makes after the drain began goes to the
other instance, and the server then stops.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import TOKEN, gunicorn, uvicorn
from tests.support.procs import free_port, wait_until

APPS = str(Path(__file__).resolve().parent / "drain_apps")


def _provider(start: Any, plane: Any, name: str, kind: str) -> tuple[Any, int]:
    port = free_port()
    env = {"INSTANCE_ID": name}
    if kind == "uvicorn":
        command = uvicorn("provider:app", "--app-dir", APPS, "--port", str(port))
    elif kind == "uvicorn-workers":
        command = uvicorn("provider:app", "--app-dir", APPS, "--port", str(port), "--workers", "2")
    else:
        command = gunicorn("--chdir", APPS, "-w", "2", "-b", f"127.0.0.1:{port}", "provider:wsgi_app")
    return start(name, "orders", command, plane.url, env=env), port


def _consumer(start: Any, plane: Any) -> tuple[Any, int]:
    port = free_port()
    return start("consumer", "checkout", uvicorn("consumer:app", "--app-dir", APPS, "--port", str(port)), plane.url), port


def _routable_orders(plane: Any) -> set[int]:
    return {i["port"] for i in plane.instances("orders") if i["state"] in ("SERVING", "WARMING")}


def _call(port: int, path: str = "/who") -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}/call", params={"path": path}, timeout=30)
    return {"status_code": response.status_code, **response.json()}


def _up(control_plane: Any, start: Any, kind: str) -> tuple[Any, int, int, Any]:
    """orders-a (of `kind`) and orders-b (uvicorn), and a consumer that has called both:
    (orders-a, its port, the consumer's port, the consumer)."""
    a, a_port = _provider(start, control_plane, "orders-a", kind)
    _provider(start, control_plane, "orders-b", "uvicorn")
    consumer, c_port = _consumer(start, control_plane)
    wait_until(lambda: len(_routable_orders(control_plane)) == 2 and control_plane.instances("checkout"), what="two orders and a consumer")
    # The consumer calls both instances, so each knows it as a recent consumer.
    wait_until(lambda: {_call(c_port)["id"] for _ in range(10)} == {"orders-a", "orders-b"}, what="calls to reach both instances")
    for _ in range(10):  # every worker of a multi-process server sees the consumer
        _call(c_port)
    return a, a_port, c_port, consumer


@pytest.mark.parametrize("kind", ["uvicorn", "uvicorn-workers", "gunicorn"])
def test_sigterm_drains_slow_request_finishes_and_new_calls_go_elsewhere(control_plane: Any, start: Any, kind: str) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, kind)
    slow: dict[str, Any] = {}

    def slow_call() -> None:
        response = httpx.get(f"http://127.0.0.1:{a_port}/slow", params={"s": "3"}, timeout=30)
        slow.update(status=response.status_code, draining=response.headers.get("x-tidegate-draining"), body=response.json())

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_until(lambda: httpx.get(f"{a.admin_url()}/state", timeout=5).json()["in_flight"] >= 1, what="the slow request in flight")
    a.proc.signal(signal.SIGTERM)
    wait_until(lambda: "draining orders" in a.proc.output(), what="the drain to begin")
    try:  # at once: the drain ends with the slow request, and the admin endpoint with the process
        undo = httpx.post(f"{a.admin_url()}/online", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert undo.status_code == 409 and "stopping" in undo.json()["error"], undo.text  # SIGTERM is not undone
    except httpx.TransportError:  # a loaded machine got here late: gone only because the drain finished
        assert "drain of orders done" in a.proc.output(), a.fail_report()
    after = [_call(c_port) for _ in range(20)]
    caller.join(timeout=30)
    assert slow["status"] == 200 and slow["body"]["id"] == "orders-a", slow
    assert slow["draining"] == "1", slow  # its answer left while draining: it says so
    assert all(r["status_code"] == 200 and r["id"] == "orders-b" for r in after), after
    a.proc.wait(timeout=30)
    assert "drain of orders done" in a.proc.output(), a.fail_report()


def test_offline_needs_the_token_drains_and_online_undoes_it(control_plane: Any, start: Any) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, "uvicorn")
    admin = a.admin_url()
    refused = httpx.post(f"{admin}/offline", timeout=5)
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
    wrong = httpx.post(f"{admin}/offline", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    assert _routable_orders(control_plane) == {a_port, _other_port(control_plane, a_port)}
    auth = {"Authorization": f"Bearer {TOKEN}"}

    started = httpx.post(f"{admin}/offline", params={"wait": "false"}, headers=auth, timeout=10)
    assert started.status_code == 200 and started.json()["phase"] in ("DRAINING", "DRAINED"), started.text
    assert all(_call(c_port)["id"] == "orders-b" for _ in range(20))
    wait_until(lambda: a_port not in _routable_orders(control_plane), what="the control plane to show the drain")
    assert httpx.get(f"{admin}/ready", timeout=5).status_code == 503

    undone = httpx.post(f"{admin}/online", headers=auth, timeout=10)
    if undone.status_code == 200:  # the drain had not finished yet: serving again
        wait_until(lambda: a_port in _routable_orders(control_plane), what="the instance to serve again")
        wait_until(lambda: "orders-a" in {_call(c_port)["id"] for _ in range(10)}, what="calls to reach it again")
    else:
        assert undone.status_code == 409 and "no unfinished drain" in undone.json()["error"], undone.text

    done = httpx.post(f"{admin}/offline", headers=auth, timeout=30)
    assert done.status_code == 200 and done.json()["phase"] == "DRAINED", done.text
    assert httpx.post(f"{admin}/online", headers=auth, timeout=10).status_code == 409  # finished: not undone
    assert all(_call(c_port)["id"] == "orders-b" for _ in range(20))
    bad = httpx.post(f"{admin}/offline", params={"wait": "maybe"}, headers=auth, timeout=5)
    assert bad.status_code == 400 and "wait" in bad.json()["error"]
    assert httpx.get(f"http://127.0.0.1:{a_port}/who", timeout=5).status_code == 200  # drained, not stopped


def _other_port(plane: Any, port: int) -> int:
    return next(p for p in _routable_orders(plane) if p != port)


def test_offline_on_gunicorn_waits_for_the_workers_slow_request(control_plane: Any, start: Any) -> None:
    a, a_port, c_port, _ = _up(control_plane, start, "gunicorn")
    slow: dict[str, Any] = {}

    def slow_call() -> None:
        response = httpx.get(f"http://127.0.0.1:{a_port}/slow", params={"s": "2"}, timeout=30)
        slow.update(status=response.status_code, draining=response.headers.get("x-tidegate-draining"), at=time.monotonic())

    caller = threading.Thread(target=slow_call)
    caller.start()
    admin = a.admin_url()
    wait_until(lambda: httpx.get(f"{admin}/state", timeout=5).json()["in_flight"] >= 1, what="the slow request in a worker")
    done = httpx.post(f"{admin}/offline", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    drained_at = time.monotonic()
    caller.join(timeout=30)
    assert done.status_code == 200 and done.json()["phase"] == "DRAINED", done.text
    assert slow["status"] == 200 and slow["draining"] == "1", slow  # answered by a worker that had seen the drain
    assert slow["at"] <= drained_at  # drained means the worker's request had finished
    assert all(_call(c_port)["id"] == "orders-b" for _ in range(20))
