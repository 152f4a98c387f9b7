"""`uvicorn --reload` under `tidegate run`: SIGTERM to the reloader drains like any other server.

The reloader owns the listening socket and the registration; its server runs
in a spawned process. SIGTERM to the reloader marks the instance DRAINING at
once (the control plane is told), the server process keeps serving until no
request is in flight, and only then is it terminated.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.agent.conftest import uvicorn
from tests.support.procs import free_port, wait_until

APPS = str(Path(__file__).resolve().parents[1] / "offline" / "drain_apps")


def test_sigterm_to_the_reloader_drains_a_slow_request_and_keeps_serving_meanwhile(control_plane: Any, start: Any, tmp_path: Path) -> None:
    port = free_port()
    watched = tmp_path / "watched"  # the reloader watches an empty directory, not the repository
    watched.mkdir()
    command = uvicorn("provider:app", "--app-dir", APPS, "--port", str(port), "--reload", "--reload-dir", str(watched))
    server = start("reloading", "orders", command, control_plane.url, env={"INSTANCE_ID": "orders-r"})
    wait_until(lambda: [i["state"] for i in control_plane.instances("orders")] in (["SERVING"], ["WARMING"]), what="registration")
    slow: dict[str, Any] = {}

    def slow_call() -> None:
        answer = httpx.get(f"http://127.0.0.1:{port}/slow", params={"s": "2"}, timeout=30)
        slow.update(status=answer.status_code, draining=answer.headers.get("x-tidegate-draining"))

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_until(lambda: httpx.get(f"{server.admin_url()}/state", timeout=5).json()["in_flight"] >= 1, what="the slow request in flight")
    server.proc.signal(signal.SIGTERM)
    wait_until(lambda: "draining orders" in server.proc.output(), what="the drain to begin", timeout=10)
    assert [i["state"] for i in control_plane.instances("orders")] in (["DRAINING"], []), server.fail_report()  # consumers are told
    during = httpx.get(f"http://127.0.0.1:{port}/who", timeout=10)  # the server process still serves while draining
    assert during.status_code == 200 and during.headers.get("x-tidegate-draining") == "1", server.fail_report()
    caller.join(timeout=30)
    assert slow == {"status": 200, "draining": "1"}, server.fail_report()
    server.proc.wait(timeout=30)
    assert "drain of orders done" in server.proc.output(), server.fail_report()
    wait_until(lambda: control_plane.instances("orders") == [], what="deregistration")
