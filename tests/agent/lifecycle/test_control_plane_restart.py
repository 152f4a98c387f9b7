"""A control plane SIGKILLed and restarted under load: consumers forget no live instance, none of their calls fails.

The restarted control plane has a new epoch and an empty registry. The
consumer's directory holds its instances over (a grace window of one lease)
instead of emptying; every provider's owner (a single uvicorn, gunicorn's
arbiter) sees the new epoch on its watch's reconnect and registers again at
once. The agents here never heartbeat within the test (a 60 s lease, an
hour's heartbeat interval), so a heartbeat's 404 cannot be what brings them
back: the epoch is.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.agent.conftest import TOKEN, gunicorn, uvicorn
from tests.support.procs import TIDEGATE, Proc, free_port, wait_until

APPS = str(Path(__file__).resolve().parents[1] / "offline" / "drain_apps")
LEASE_S = 60


class Plane:
    """`tidegate control` on a fixed port and data dir, so it can be killed and started again."""

    def __init__(self, tmp: Path, port: int, name: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        args = [*TIDEGATE, "control", "--port", str(port), "--data", str(tmp / "control-data"), "--token", TOKEN]
        self.proc = Proc([*args, "--instance-ttl", str(LEASE_S)], tmp / f"{name}.log")
        wait_until(lambda: "listening on" in self.proc.output(), what="the control plane to listen")

    def routable(self, service: str) -> set[int]:
        answer = httpx.get(f"{self.url}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        return {i["port"] for i in answer.json() if i["state"] in ("SERVING", "WARMING")} if answer.status_code == 200 else set()

    def epoch(self) -> str:
        return str(httpx.get(f"{self.url}/v1/health", timeout=5).json().get("epoch"))


class Load:
    """Calls the consumer back to back from a thread; keeps every answer that was not a 200."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/call"
        self.sent = 0
        self.failed: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                self.sent += 1
                try:
                    answer = client.get(self.url)
                    if answer.status_code != 200:
                        self.failed.append(answer.json())
                except httpx.HTTPError as error:
                    self.failed.append(repr(error))
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_control_plane_sigkilled_and_restarted_under_load_fails_no_call(start: Any, tmp_path: Path) -> None:
    control_port = free_port()
    plane = Plane(tmp_path, control_port, "control-first")
    env = {"TIDEGATE_HEARTBEAT_INTERVAL": "3600"}  # no heartbeat before the test ends
    a_port, b_port, c_port = free_port(), free_port(), free_port()
    try:
        a = start("orders-a", "orders", uvicorn("provider:app", "--app-dir", APPS, "--port", str(a_port)), plane.url, env=env)
        b = start(
            "orders-b",
            "orders",
            gunicorn("--chdir", APPS, "-w", "2", "-b", f"127.0.0.1:{b_port}", "provider:wsgi_app"),
            plane.url,
            env=env,
        )
        start("checkout", "checkout", uvicorn("consumer:app", "--app-dir", APPS, "--port", str(c_port)), plane.url, env=env)
        wait_until(lambda: plane.routable("orders") == {a_port, b_port} and plane.routable("checkout"), what="orders and checkout")
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{c_port}/call", timeout=10).status_code == 200, what="calls to route")
        first = plane.epoch()

        load = Load(c_port)
        try:
            wait_until(lambda: load.sent > 50, what="load")
            plane.proc.signal(signal.SIGKILL)
            plane.proc.stop()
            plane = Plane(tmp_path, control_port, "control-second")
            wait_until(lambda: plane.routable("orders") == {a_port, b_port}, timeout=20, what="both orders registered again")
            sent = load.sent
            wait_until(lambda: load.sent > sent + 100, what="load after the resync")
        finally:
            load.stop()
        assert load.failed == [], (len(load.failed), load.sent, load.failed[:5])
        assert plane.epoch() != first
        for provider in (a, b):  # brought back by the epoch, not by a heartbeat the registry did not know
            assert "the control plane restarted (epoch" in provider.proc.output(), provider.fail_report()
            assert "control plane forgot instance" not in provider.proc.output(), provider.fail_report()
    finally:
        plane.proc.stop()
