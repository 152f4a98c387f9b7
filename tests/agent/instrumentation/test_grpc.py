"""gRPC carries the lane: client interceptors (sync and grpc.aio, unary and streaming) put `baggage`
in the metadata; a gRPC server under `tidegate run` reads it and its handlers' HTTP calls carry the lane.

The server (sync or aio) runs as a real process under `tidegate run`; the
HTTP service it calls is a plain uvicorn app answering the baggage it got.
The client side runs in this test process with the grpc instrumentor
applied (and removed at the end), inside a request context with a lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.agent.conftest import PYTHON_APP, uvicorn
from tests.support.procs import Proc, free_port, http_ok, wait_until
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.grpc import INSTRUMENTOR, incoming_context, outgoing_metadata
from tidegate.agent.runtime import AgentRuntime
from tidegate.core import context

LANE_APPS = Path(__file__).resolve().parent.parent / "lane_apps"
GRAY = context.RequestContext(lane="gray", baggage="user=7")
METHODS = ("Unary", "ServerStream", "ClientStream", "BidiStream")


@pytest.fixture(scope="module")
def instrumented() -> Iterator[None]:
    """Patched once for the module (the post-import hook fires once per process)."""
    INSTRUMENTOR.instrument(AgentRuntime(config=AgentConfig(service="grpc-client")))
    try:
        yield
    finally:
        INSTRUMENTOR.uninstrument()


@pytest.fixture(params=["sync", "aio"])
def grpc_server(request: pytest.FixtureRequest, tmp_path: Path, control_plane: Any, start: Any) -> Iterator[str]:
    echo_port = free_port()
    echo = Proc(
        uvicorn("--app-dir", str(LANE_APPS), "propagation_app:app", "--port", str(echo_port)),
        tmp_path / "echo.log",
        env={"APP_PORT": str(echo_port)},
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{echo_port}/health"), what="the echo service")
        port = free_port()
        server = start(
            f"grpc-{request.param}",
            "grpc-probe",
            [PYTHON_APP, str(LANE_APPS / "grpc_app.py")],
            control_plane.url,
            # TIDEGATE_HOST on loopback: every governed service is on this host, so the caller here
            # (on loopback, registered nowhere) is believed (issue 11: a gRPC server registers no instance).
            env={"PORT": str(port), "ECHO_URL": f"http://127.0.0.1:{echo_port}/echo", "MODE": request.param, "TIDEGATE_HOST": "127.0.0.1"},
        )
        wait_until(lambda: "grpc serving on" in server.proc.output(), what="the gRPC server")
        yield f"127.0.0.1:{port}"
    finally:
        echo.stop()


def call_sync(channel: grpc.Channel, method: str) -> list[str]:
    path = f"/lanes.Probe/{method}"
    if method == "Unary":
        replies = [channel.unary_unary(path)(b"x", timeout=20)]
    elif method == "ServerStream":
        replies = list(channel.unary_stream(path)(b"x", timeout=20))
    elif method == "ClientStream":
        replies = [channel.stream_unary(path)(iter([b"a", b"b"]), timeout=20)]
    else:
        replies = list(channel.stream_stream(path)(iter([b"a", b"b"]), timeout=20))
    return [reply.decode() for reply in replies]


async def call_aio(target: str, method: str) -> list[str]:
    path = f"/lanes.Probe/{method}"
    async with grpc.aio.insecure_channel(target) as channel:
        if method == "Unary":
            replies = [await channel.unary_unary(path)(b"x", timeout=20)]
        elif method == "ServerStream":
            replies = [reply async for reply in channel.unary_stream(path)(b"x", timeout=20)]
        elif method == "ClientStream":
            replies = [await channel.stream_unary(path)(iter([b"a", b"b"]), timeout=20)]
        else:
            replies = [reply async for reply in channel.stream_stream(path)(iter([b"a", b"b"]), timeout=20)]
    return [reply.decode() for reply in replies]


def in_context(carried: context.RequestContext, fn: Any, *args: Any) -> Any:
    token = context.enter(carried)
    try:
        return fn(*args)
    finally:
        context.leave(token)


@pytest.mark.parametrize("method", METHODS)
def test_a_grpc_server_calling_http_carries_the_callers_lane(instrumented: None, grpc_server: str, method: str) -> None:
    with grpc.insecure_channel(grpc_server) as channel:
        gray = in_context(GRAY, call_sync, channel, method)
        base = call_sync(channel, method)
    assert gray and all(seen == "user=7,tidegate.lane=gray" for seen in gray), gray
    assert base and all(seen == "" for seen in base), base
    gray_aio = in_context(GRAY, lambda: asyncio.run(call_aio(grpc_server, method)))
    base_aio = asyncio.run(call_aio(grpc_server, method))
    assert gray_aio and all(seen == "user=7,tidegate.lane=gray" for seen in gray_aio), gray_aio
    assert base_aio and all(seen == "" for seen in base_aio), base_aio


def test_metadata_merging_keeps_other_members_and_reads_back() -> None:
    token = context.enter(GRAY)
    try:
        assert outgoing_metadata((("baggage", "a=1,tidegate.lane=blue"), ("x", "y"))) == (("x", "y"), ("baggage", "a=1,tidegate.lane=gray"))
        assert outgoing_metadata(None) == (("baggage", "user=7,tidegate.lane=gray"),)
    finally:
        context.leave(token)
    given = (("x", "y"),)
    assert outgoing_metadata(given) is given
    assert incoming_context((("baggage", "tidegate.lane=gray"),)).lane == "gray"
    assert incoming_context((("baggage", "tidegate.lane=%%bad"),)).lane == ""
    assert incoming_context(None) is context.EMPTY
