"""A connection a draining instance closed unanswered is retried elsewhere only for an idempotent method.

Over real sockets, per library: instance A reads the whole request, learns it
drains (the consumer is told, as by the drain's notice) and closes the
connection without answering, as a server stopping under a request can; B
answers. A GET is sent again to B (the caller sees B's answer). A POST is not:
A may have acted on it, so the caller sees the library's own error and B never
gets it (before, B got it too: a POST done twice).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.agent.outbound_apps.clients import INSTRUMENTORS, LIBRARIES, make_runtime
from tidegate.agent.offline import LosslessOffline
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance


class RawInstance:
    """A loopback HTTP/1.1 server: reads each request whole, then answers 200 or closes unanswered."""

    def __init__(self, answers: bool, on_request: object = None) -> None:
        self.answers = answers
        self.on_request = on_request
        self.received: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.received.append(head.split(b" ")[0].decode())
            if callable(self.on_request):
                self.on_request()
            if self.answers:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def world() -> Iterator[tuple[AgentRuntime, RawInstance, RawInstance]]:
    runtime = make_runtime()
    offline = runtime.capability(LosslessOffline)
    assert offline is not None
    a_instance: list[Instance] = []

    def a_drains() -> None:
        offline.notices.notice(a_instance[0].id, a_instance[0].address, "test")

    a, b = RawInstance(answers=False, on_request=a_drains), RawInstance(answers=True)
    a_instance.append(Instance(id="a", service="orders", host="127.0.0.1", port=a.port))
    runtime.directory.replace(1, [a_instance[0], Instance(id="b", service="orders", host="127.0.0.1", port=b.port)], ["orders"])
    try:
        yield runtime, a, b
    finally:
        a.close()
        b.close()


def send(library: str, method: str) -> int | str:
    """The status of one call to http://orders/x, or the name of the error it raised."""
    import asyncio

    import aiohttp
    import httpx
    import requests

    try:
        if library == "httpx":
            with httpx.Client(trust_env=False, timeout=10) as client:
                return client.request(method, "http://orders/x", content=b"{}").status_code
        if library == "httpx-async":

            async def httpx_async() -> int:
                async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                    return (await client.request(method, "http://orders/x", content=b"{}")).status_code

            return asyncio.run(httpx_async())
        if library == "requests":
            with requests.Session() as session:
                session.trust_env = False
                return session.request(method, "http://orders/x", data=b"{}", timeout=10).status_code

        async def aiohttp_call() -> int:
            async with aiohttp.ClientSession() as session, session.request(method, "http://orders/x", data=b"{}") as response:
                return response.status

        return asyncio.run(aiohttp_call())
    except Exception as error:
        return type(error).__name__


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_only_an_idempotent_request_is_sent_again_after_a_draining_instance_closed_it_unanswered(
    library: str, method: str, world: tuple[AgentRuntime, RawInstance, RawInstance]
) -> None:
    runtime, a, b = world
    INSTRUMENTORS[library].instrument(runtime)
    try:
        results = [send(library, method) for _ in range(6)]  # A is tried once (then it drains, out of balancing)
    finally:
        INSTRUMENTORS[library].uninstrument()
    if method == "GET":
        # aiohttp itself sends an idempotent request again once on the same instance first.
        assert a.received in (["GET"], ["GET", "GET"]), (a.received, b.received, results)
        assert results == [200] * 6 and b.received == ["GET"] * 6  # the one A dropped went to B
    else:
        assert a.received == ["POST"], (a.received, b.received, results)
        # Delivered once each: the one A dropped failed with the library's own error, B never got it.
        assert b.received == ["POST"] * 5, (b.received, results)
        assert sorted(results, key=str)[:5] == [200] * 5 and results.count(200) == 5
