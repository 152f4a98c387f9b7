"""Real servers under `tidegate run` register the address they listen on, once, and leave cleanly."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.agent.conftest import PYTHON_APP, gunicorn, uvicorn
from tests.support.procs import free_port, http_ok, wait_until


def _one_instance(plane, service: str, port: int, tag: str) -> dict:
    found = plane.instances(service)
    if len(found) != 1:
        return {}
    instance = found[0]
    assert (instance["host"], instance["port"], instance["tag"]) == ("127.0.0.1", port, tag), instance
    return instance


def _exited_cleanly(server, sig: int = signal.SIGTERM) -> bool:
    """gunicorn exits 0; uvicorn (>= 0.29) re-raises the signal it caught once its
    shutdown is complete, as it does without the agent, so its status is the signal's."""
    code = server.proc.wait(timeout=30)
    return code == 0 or (code == -sig and "Finished server process" in server.proc.output())


def _metrics_show(admin: str, needle: str) -> bool:
    return needle in httpx.get(f"{admin}/metrics", timeout=5).text


def test_uvicorn_and_gunicorn_servers_register_serve_and_deregister(control_plane, start) -> None:
    ports = {name: free_port() for name in ("fastapi", "starlette", "flask", "uvicorn-worker")}
    servers = {
        "fastapi": start("fastapi", "orders", uvicorn("fastapi_app:app", "--port", str(ports["fastapi"])), control_plane.url, tag="gray"),
        "starlette": start("starlette", "items", uvicorn("starlette_app:app", "--port", str(ports["starlette"])), control_plane.url),
        "flask": start(
            "flask", "users", gunicorn("-w", "2", "-b", f"127.0.0.1:{ports['flask']}", "flask_app:app"), control_plane.url, tag="blue"
        ),
        "uvicorn-worker": start(
            "uvicorn-worker",
            "carts",
            gunicorn("-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{ports['uvicorn-worker']}", "fastapi_app:app"),
            control_plane.url,
        ),
    }
    tags = {"fastapi": "gray", "starlette": "", "flask": "blue", "uvicorn-worker": ""}
    calls = {
        "fastapi": ("/orders/7", 'route="/orders/{order_id}"'),
        "starlette": ("/items/abc", 'route="/items/{item_id}"'),
        "flask": ("/users/3", 'route="/users/<int:user_id>"'),
        "uvicorn-worker": ("/orders/8", 'route="/orders/{order_id}"'),
    }
    for name, server in servers.items():
        instance = wait_until(lambda: _one_instance(control_plane, server.service, ports[name], tags[name]), what=f"{name} to register")
        admin = server.admin_url()
        assert instance["admin_port"] == int(admin.rsplit(":", 1)[1])
        wait_until(lambda: http_ok(f"{admin}/ready"), what=f"{name} ready")
        path, needle = calls[name]
        for _ in range(4):  # several, so that every worker of a multi-worker server likely serves one
            assert httpx.get(f"http://127.0.0.1:{ports[name]}{path}", timeout=5).status_code == 200
        wait_until(lambda: _metrics_show(admin, needle), what=f"{name}'s metrics to show {needle}")
        state = httpx.get(f"{admin}/state", timeout=5).json()
        assert state["service"] == server.service and state["state"] in ("WARMING", "SERVING")  # WARMING for the warm-up window
        assert state["address"] == f"127.0.0.1:{ports[name]}"

    for name, server in servers.items():  # workers never register: still one instance per address
        assert len(control_plane.instances(server.service)) == 1, name

    for name, server in servers.items():
        server.proc.signal(signal.SIGTERM)
        assert _exited_cleanly(server), server.fail_report()
        wait_until(lambda: control_plane.instances(server.service) == [], what=f"{name} to deregister")
        assert f"deregistered {server.service}-" in server.proc.output()


def test_uvicorn_supervisor_with_workers_registers_once(control_plane, start) -> None:
    port = free_port()
    server = start("workers", "ledger", uvicorn("fastapi_app:app", "--port", str(port), "--workers", "2"), control_plane.url)
    wait_until(lambda: _one_instance(control_plane, "ledger", port, ""), what="the supervisor to register")
    admin = server.admin_url()
    for _ in range(6):
        assert httpx.get(f"http://127.0.0.1:{port}/orders/1", timeout=5).status_code == 200
    # workers' statistics reach the supervisor's admin endpoint
    wait_until(
        lambda: _metrics_show(admin, 'tidegate_inbound_requests_total{method="GET",route="/orders/{order_id}",status="200"} 6.0'),
        what="all six requests in the supervisor's metrics",
    )
    assert len(control_plane.instances("ledger")) == 1
    server.proc.signal(signal.SIGTERM)
    assert _exited_cleanly(server), server.fail_report()
    wait_until(lambda: control_plane.instances("ledger") == [], what="deregistration")


def test_program_that_runs_uvicorn_itself_registers(control_plane, start) -> None:
    port = free_port()
    server = start("programmatic", "greeter", [PYTHON_APP, "programmatic_app.py", str(port)], control_plane.url, tag="canary")
    wait_until(lambda: _one_instance(control_plane, "greeter", port, "canary"), what="registration")
    assert httpx.get(f"http://127.0.0.1:{port}/hi", timeout=5).text == "hi"
    server.proc.signal(signal.SIGINT)
    assert _exited_cleanly(server, signal.SIGINT), server.fail_report()
    wait_until(lambda: control_plane.instances("greeter") == [], what="deregistration")


def test_killed_instance_is_removed_after_its_lease(control_plane, start) -> None:
    port = free_port()
    server = start("killed", "fragile", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url)
    wait_until(lambda: _one_instance(control_plane, "fragile", port, ""), what="registration")
    server.proc.signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    wait_until(lambda: control_plane.instances("fragile") == [], timeout=30, what="the lease to expire")
    assert "deregistered" not in server.proc.output()


def test_gunicorn_django_counts_by_resolved_route(control_plane, start) -> None:
    port = free_port()
    server = start("django", "accounts", gunicorn("-w", "2", "-b", f"127.0.0.1:{port}", "django_site"), control_plane.url)
    wait_until(lambda: _one_instance(control_plane, "accounts", port, ""), what="registration")
    admin = server.admin_url()
    for account in (1, 2, 3, 4):
        assert httpx.get(f"http://127.0.0.1:{port}/accounts/{account}", timeout=5).json() == {"id": account}
    wait_until(lambda: _metrics_show(admin, 'route="/accounts/<int:account_id>"'), what="the Django route in the metrics")
    assert "/accounts/1" not in httpx.get(f"{admin}/metrics", timeout=5).text
    server.proc.signal(signal.SIGTERM)
    assert _exited_cleanly(server), server.fail_report()
    wait_until(lambda: control_plane.instances("accounts") == [], what="deregistration")


def test_state_counts_requests_in_flight(control_plane, start, tmp_path) -> None:
    port = free_port()
    server = start("inflight", "holder", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url)
    wait_until(lambda: _one_instance(control_plane, "holder", port, ""), what="registration")
    admin = server.admin_url()
    release = tmp_path / "release"
    with ThreadPoolExecutor(max_workers=2) as pool:
        held = [pool.submit(httpx.get, f"http://127.0.0.1:{port}/hold", params={"until": str(release)}, timeout=30) for _ in range(2)]
        wait_until(lambda: httpx.get(f"{admin}/state", timeout=5).json()["in_flight"] == 2, what="two requests in flight")
        release.touch()
        assert all(f.result().json() == {"held": True} for f in held)
    wait_until(lambda: httpx.get(f"{admin}/state", timeout=5).json()["in_flight"] == 0, what="no request in flight")
