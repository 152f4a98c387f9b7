"""What the restart benches share: free ports, waiting, child processes, and the open-loop load.

The load is open-loop: requests leave on schedule (RATE a second) whatever the
answers' pace, so a stalled server shows as failures and latency rather than as
a slower sender. Each bench keeps its own tally of what was sent and what
failed (`Tally`): per phase, per target, or in all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05) -> None:
    """Poll `predicate` until it is true; an exception counts as not yet (a server still starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Proc:
    """A child started in its own session, so that stopping it stops what it started too."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(timeout=10)


class Tally(Protocol):
    def on_sent(self) -> str:
        """A request leaves; returns the key its answer is counted under (a phase, or "")."""

    def on_failed(self, key: str, reason: str) -> None:
        """The request sent under `key` failed for `reason`."""


def reason_of(response: httpx.Response) -> str:
    """Why an answer that is not 200 failed: the consumer's own `error`, else the status and the body's start."""
    try:
        error = response.json().get("error")
    except Exception:  # not JSON, or not an object
        error = None
    return str(error or f"HTTP {response.status_code}: {response.text[:80].strip()}")[:120]


async def open_loop(url: str, rate: float, stop: asyncio.Event, tally: Tally) -> None:
    """GET `url` RATE times a second until `stop`; anything but a 200 is a failure (httpx: no retries)."""
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=60.0, limits=limits, trust_env=False) as client:

        async def one(key: str) -> None:
            try:
                response = await client.get(url)
                if response.status_code != 200:
                    tally.on_failed(key, reason_of(response))
            except Exception as error:  # the consumer itself failing is a failure too
                tally.on_failed(key, f"{type(error).__name__}: {error}"[:120])

        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            # Always yield, even when behind schedule, so the answers (and `stop`) get their turn.
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            task = asyncio.create_task(one(tally.on_sent()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)
