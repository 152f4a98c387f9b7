"""A WSGI request is in flight until the server closes its body: a drain never ends under a streaming response.

A real WSGI server (wsgiref, in a thread, on a real socket) serves a streaming
app wrapped by the inbound middleware; the client reads the first chunk, and
the request must still count as in flight until the last one was sent. Under
gunicorn, a body returned as `wsgi.file_wrapper` keeps its type (sendfile).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from tests.support.procs import wait_until
from tidegate.agent.instrumentation.wsgi import InboundWSGI
from tidegate.agent.metrics import AgentMetrics


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def streaming() -> Iterator[tuple[int, AgentMetrics, threading.Event]]:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first\n"
        release.wait(timeout=30)
        yield b"last\n"

    metrics = AgentMetrics()
    server: WSGIServer = make_server("127.0.0.1", 0, InboundWSGI(app, metrics), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, metrics, release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_streaming_response_is_in_flight_until_its_body_was_sent(streaming: tuple[int, AgentMetrics, threading.Event]) -> None:
    port, metrics, release = streaming
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        while b"first" not in received:
            received += sock.recv(4096)
        assert metrics.in_flight == 1  # the app returned its iterable long ago; the body is not sent yet
        release.set()
        while chunk := sock.recv(4096):
            received += chunk
    assert received.endswith(b"last\n")
    wait_until(lambda: metrics.in_flight == 0, what="the request to end once its body was closed")
    assert metrics.snapshot()["inbound"][0][:3] == ["/stream", "GET", 200]


def test_a_file_wrapper_body_keeps_its_type_and_ends_the_request_on_close() -> None:
    FileWrapper = pytest.importorskip("gunicorn.http.wsgi").FileWrapper  # not in the oldest-versions venv

    closed: list[bool] = []

    class File:
        def read(self, size: int = -1) -> bytes:
            return b""

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](File())

    metrics = AgentMetrics()
    body = InboundWSGI(app, metrics)({"REQUEST_METHOD": "GET", "PATH_INFO": "/f", "wsgi.file_wrapper": FileWrapper}, lambda *a: None)
    assert isinstance(body, FileWrapper) and metrics.in_flight == 1
    body.close()  # type: ignore[attr-defined]
    assert closed == [True] and metrics.in_flight == 0


def test_an_app_that_raises_ends_its_request_at_once() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    metrics = AgentMetrics()
    with pytest.raises(RuntimeError):
        InboundWSGI(app, metrics)({"REQUEST_METHOD": "GET", "PATH_INFO": "/f"}, lambda *a: None)
    assert metrics.in_flight == 0 and metrics.snapshot()["inbound"][0][:3] == ["/f", "GET", 500]


def test_a_list_body_keeps_its_length_and_a_servers_marker_is_returned_as_it_is() -> None:
    metrics = AgentMetrics()
    body = InboundWSGI(lambda environ, start_response: [b"one block"], metrics)({"PATH_INFO": "/l"}, lambda *a: None)
    assert len(body) == 1 and list(body) == [b"one block"]  # type: ignore[arg-type]  # wsgiref sets Content-Length from it
    body.close()  # type: ignore[attr-defined]
    already_handled = object()  # gunicorn's async workers' marker of a response the app wrote itself
    assert InboundWSGI(lambda environ, start_response: already_handled, metrics)({"PATH_INFO": "/h"}, lambda *a: None) is already_handled
    assert metrics.in_flight == 0
