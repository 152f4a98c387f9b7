"""No client of the admin endpoint can stall the agent (issue 11, item 6), over real sockets.

A client that asks for a large `/metrics` and never reads holds only its own connection: `/ready`
answers and the fork gate is free meanwhile (on the base the answer was written inside the gate,
with no timeout). Idle connections are bounded and closed after the I/O timeout (on the base 200
idle connections made 200 threads, kept for ever).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tidegate.agent.forking import FORK_GATE
from tidegate.agent.lifecycle import admin as admin_module
from tidegate.agent.lifecycle.admin import AdminServer

BIG = b"# a large metrics page\n" + b"x" * (32 * 1024 * 1024)


class View:
    def ready(self) -> bool:
        return True

    def state(self) -> dict[str, Any]:
        return {"state": "SERVING"}

    def metrics_text(self) -> bytes:
        return BIG


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(admin_module, "IO_TIMEOUT_S", 1.0)
    server = AdminServer(View(), "agent-token-0123456789")
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def _connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return client


def test_a_client_that_never_reads_metrics_holds_neither_the_gate_nor_ready(admin: int) -> None:
    stalled = _connect(admin)
    try:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert select.select([stalled], [], [], 30)[0], "no answer began"  # the answer is being written
        assert FORK_GATE._lock.acquire(timeout=30), "the fork gate is held by an answer nobody reads"
        FORK_GATE._lock.release()
        assert httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=30).status_code == 200
    finally:
        stalled.close()


def test_idle_connections_are_bounded_and_closed_after_the_timeout(admin: int) -> None:
    before = threading.active_count()
    peak = [0]
    done = threading.Event()

    def sample() -> None:  # the most threads the endpoint ever ran at once
        while not done.is_set():
            peak[0] = max(peak[0], threading.active_count() - before - 1)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    idle = [_connect(admin) for _ in range(200)]
    try:
        for client in idle:  # each is closed by the server: over the bound at once, the others at the I/O timeout
            assert select.select([client], [], [], 60)[0], "an idle connection is kept open for ever"
            assert client.recv(1) == b""
        done.set()
        sampler.join()
        assert 0 < peak[0] <= admin_module.MAX_CONNECTIONS, peak
        assert httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=30).status_code == 200
    finally:
        done.set()
        for client in idle:
            client.close()
