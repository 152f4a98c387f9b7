"""The response pass-through: an upstream's bytes go to the client verbatim only when nothing in the head must change."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tests.gateway.harness import GatewayProcess, route
from tests.support.procs import free_port
from tidegate.gateway.upstream import raw_framing

OK = b"HTTP/1.1 200 OK\r\nserver: x\r\ncontent-length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    ("data", "verbatim"),
    [
        (OK, True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nkeep-alive: timeout=5\r\ncontent-length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nx-tidegate-draining: 1\r\ncontent-length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nserver: x\r\n\r\nuntil close", False),  # framed by the close: re-framed
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", False),  # the head not whole in the first read
    ],
)
def test_raw_framing_decides_from_the_head(data, verbatim):
    assert raw_framing(data) is verbatim


class ScriptedUpstream:
    """Answers every request with the same bytes (whatever they are) on a thread."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(self.answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        self.loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def exchange_twice(port: int) -> bytes:
    """Two requests on one keep-alive connection; everything read until the second answer is whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nhost: t\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith((b"ok", b"0\r\n\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize(
    "answer",
    [OK, b"HTTP/1.1 200 OK\r\nserver: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n"],
)
def test_a_plain_answer_passes_byte_for_byte(tmp_path, answer):
    upstream = ScriptedUpstream(answer)
    gateway = GatewayProcess(tmp_path, route("all", "svc"), "--upstream", f"svc=127.0.0.1:{upstream.port}")
    try:
        assert exchange_twice(gateway.port) == answer + answer
    finally:
        gateway.stop()
        upstream.stop()


def test_hop_by_hop_response_headers_are_still_dropped(tmp_path):
    upstream = ScriptedUpstream(b"HTTP/1.1 200 OK\r\nconnection: close\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\nok")
    gateway = GatewayProcess(tmp_path, route("all", "svc"), "--upstream", f"svc=127.0.0.1:{upstream.port}")
    try:
        data = exchange_twice(gateway.port)
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2  # the client's connection stayed open for the second
        assert b"keep-alive:" not in data.lower()
        assert b"connection: close" not in data.lower()
    finally:
        gateway.stop()
        upstream.stop()
