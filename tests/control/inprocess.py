"""A control plane served by uvicorn in a thread of the test process, for tests that
need to reach inside it while it serves (its plane, its connections' transports)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn

from tests.support.procs import wait_until
from tidegate.control.app import create_app
from tidegate.control.plane import ControlPlane
from tidegate.control.tokens import RoleTokens

T = TypeVar("T")
TOKEN = "inprocess-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ServedPlane:
    """`plane` served on a free loopback port; `url` once listening. `stop()` always.

    Its connections get small kernel send buffers (inherited from the listening
    socket), so what a connection's peer does not read stays in this process,
    where `write_buffers` sees it, instead of in the kernel."""

    def __init__(self, plane: ControlPlane, **app_options: Any) -> None:
        self.plane = plane
        self._clients: list[socket.socket] = []
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(plane, RoleTokens(TOKEN, TOKEN, TOKEN), **app_options),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        wait_until(lambda: self.server.started, timeout=30, what="the in-process control plane to start")
        self.loop: asyncio.AbstractEventLoop = self.server.servers[0].get_loop()

    def call(self, action: Callable[[], T]) -> T:
        """Run `action` on the server's event loop thread (the plane's only thread) and return its result."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(action())
            except BaseException as error:
                done.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def write_buffers(self) -> list[int]:
        """Bytes waiting in each open connection's transport (what the process holds for it)."""

        def sizes() -> list[int]:
            return [c.transport.get_write_buffer_size() for c in self.server.server_state.connections if c.transport is not None]

        return self.call(sizes)

    def paused_connections(self) -> int:
        """Connections whose writes wait for the peer to read (every byte it can take is sent)."""
        return self.call(lambda: sum(1 for c in self.server.server_state.connections if c.flow is not None and c.flow.write_paused))

    def non_reading_watcher(self) -> socket.socket:
        """A watch stream whose client never reads (closed by `stop`)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(watch_request())
        self._clients.append(sock)
        return sock

    def stop(self) -> None:
        for sock in self._clients:
            sock.close()
        try:
            self.call(self.plane.fanout.close_all)  # as `tidegate control` does on SIGTERM
        except Exception:
            pass
        self.server.should_exit = True
        self._thread.join(timeout=30)


def watch_request(token: str = TOKEN, extra: str = "") -> bytes:
    return f"GET /v1/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{extra}\r\n".encode()
