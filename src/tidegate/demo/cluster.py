"""The processes a demo scene runs: one control plane and services under `tidegate run`.

Each process gets its own process group and a log file in the scene's work
directory; `stop_all` always leaves nothing running, and a failure prints the
tail of the log that explains it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tidegate.client.control import ControlClient
from tidegate.control.storage import new_token


class DemoError(RuntimeError):
    """A demo step failed; the message says which and shows the log that explains it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    stopped: bool = False  # stopped on purpose by a scene: its exit is no failure

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (what Kubernetes sends), then SIGKILL if it does not stop in time."""
        self.stopped = True
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(timeout=5)


@dataclass
class Cluster:
    workdir: Path
    token: str = field(default_factory=new_token)
    control_url: str = ""
    processes: list[Process] = field(default_factory=list)
    _client: ControlClient | None = None

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(self.control_url, self.token)
        return self._client

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, port: int = 0) -> Process:
        log = self.workdir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        popen = subprocess.Popen(
            args,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=str(self.workdir),
        )
        process = Process(name, popen, log, port)
        self.processes.append(process)
        return process

    def start_control(self, instance_ttl_s: float = 5.0) -> str:
        port = free_port()
        process = self._spawn(
            "control",
            [
                sys.executable,
                "-m",
                "tidegate",
                "control",
                "--port",
                str(port),
                "--data",
                str(self.workdir / "control-data"),
                "--token",
                self.token,
                "--instance-ttl",
                str(instance_ttl_s),
            ],
            port=port,
        )
        self.control_url = f"http://127.0.0.1:{port}"
        self._wait(lambda: httpx.get(f"{self.control_url}/v1/health", timeout=1).status_code == 200, process, "the control plane to answer")
        return self.control_url

    def start_service(self, service: str, instance: str, app: str, tag: str = "", env: dict[str, str] | None = None) -> Process:
        """`tidegate run --service S -- python -m uvicorn APP --port P`, the way a user would."""
        port = free_port()
        args = [sys.executable, "-m", "tidegate", "run", "--service", service, "--control", self.control_url, "--token", self.token]
        if tag:
            args += ["--tag", tag]
        args += ["--", sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return self._spawn(instance, args, {"DEMO_INSTANCE": instance, **(env or {})}, port=port)

    def wait_registered(self, service: str, count: int, timeout: float = 60.0) -> None:
        def enough() -> bool:
            live = [i for i in self.client.instances(service) if i.state.routable]
            return len(live) >= count

        self._wait(enough, None, f"{count} instances of {service!r} to register", timeout)

    def _wait(self, ready: Callable[[], bool], process: Process | None, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except Exception:  # not up yet: refused, 404, a half-started process
                pass
            dead = [p for p in ([process] if process else self.processes) if not p.alive() and not p.stopped]
            if dead:
                raise DemoError(f"{dead[0].name} exited while waiting for {what}:\n{dead[0].tail()}")
            time.sleep(0.1)
        raise DemoError(f"timed out waiting for {what}")

    def stop_all(self) -> None:
        """Services first (they deregister), the control plane last."""
        for process in sorted(self.processes, key=lambda p: p.name == "control"):
            try:
                process.terminate()
            except ProcessLookupError:
                pass
        if self._client is not None:
            self._client.close()
