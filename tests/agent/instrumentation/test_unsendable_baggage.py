"""Raw non-ASCII bytes in an inbound `baggage` header never make an outbound call fail.

A client may send any bytes in `baggage` (`user=café` in raw UTF-8, Latin-1, a
NUL); the inbound middleware reads them as Latin-1, as ASGI and WSGI do. Such
members cannot be sent by httpx (it raised UnicodeEncodeError: the app answered
500) nor by gRPC (the call failed with "Invalid metadata"), and requests and
aiohttp sent bytes the callee could not read. They are dropped on entry and on
every edit; every other member goes on as it came. Each library calls a real
server over a real socket, in a request entered the way the inbound side enters it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tests.agent.outbound_apps.clients import INSTRUMENTORS, LIBRARIES, Server, call, make_runtime, start_servers
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.asgi import request_context
from tidegate.agent.instrumentation.grpc import INSTRUMENTOR as GRPC
from tidegate.agent.runtime import AgentRuntime
from tidegate.core import context

#: What a client may put on the wire: raw UTF-8, raw Latin-1, an empty member, a NUL.
RAW = b"user=caf\xc3\xa9,trace=abc,,name=\xe9t\xe9;p=1, span=1,bad=\x00"
KEPT = "trace=abc, span=1"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    yield from start_servers(["orders-1"], tmp_path_factory.mktemp("servers"))


@pytest.fixture
def entered(request: pytest.FixtureRequest) -> Iterator[context.RequestContext]:
    """The request context the ASGI middleware enters for a request with `RAW` (and a lane when asked)."""
    lane = getattr(request, "param", "")
    headers = [(b"baggage", RAW)] + ([(b"baggage", f"tidegate.lane={lane}".encode())] if lane else [])
    found = request_context(headers)
    token = context.enter(found)
    try:
        yield found
    finally:
        context.leave(token)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("entered", ["", "gray"], indirect=True)
def test_http_clients_send_the_members_they_can_and_the_call_succeeds(
    library: str, servers: list[Server], entered: context.RequestContext
) -> None:
    runtime = make_runtime()
    runtime.directory.replace(1, [servers[0].instance()], ["orders"])
    INSTRUMENTORS[library].instrument(runtime)
    try:
        replies = call(library, ["http://orders/x", f"http://127.0.0.1:{servers[0].port}/y"])
    finally:
        INSTRUMENTORS[library].uninstrument()
    expected = f"{KEPT},tidegate.lane=gray" if entered.lane else KEPT
    assert [(reply.status, reply.body["baggage"]) for reply in replies] == [(200, expected)] * 2


@pytest.mark.parametrize("library", ["httpx", "httpx-async", "aiohttp"])
def test_the_apps_own_raw_baggage_gets_the_lane_without_failing(library: str, servers: list[Server]) -> None:
    """The app's own header holding raw bytes (httpx takes bytes, aiohttp text): the lane is added, the call succeeds."""
    own: str | bytes = "own=1,mine=caf\xe9" if library == "aiohttp" else b"own=1,mine=caf\xc3\xa9"
    runtime = make_runtime()
    runtime.directory.replace(1, [servers[0].instance()], ["orders"])
    INSTRUMENTORS[library].instrument(runtime)
    token = context.enter(context.RequestContext(lane="gray"))
    try:
        (reply,) = call(library, ["http://orders/x"], headers={"baggage": own})
    finally:
        context.leave(token)
        INSTRUMENTORS[library].uninstrument()
    assert (reply.status, reply.body["baggage"]) == (200, "own=1,tidegate.lane=gray")


class _Echo:
    """A real gRPC server (in this process) answering the `baggage` metadata it got."""

    def __init__(self) -> None:
        def handler(request: bytes, servicer_context: Any) -> bytes:
            metadata = dict(servicer_context.invocation_metadata())
            return str(metadata.get("baggage", "")).encode()

        generic = grpc.method_handlers_generic_handler("probe.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(handler)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((generic,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@pytest.fixture(scope="module")
def grpc_echo() -> Iterator[_Echo]:
    echo = _Echo()
    try:
        yield echo
    finally:
        echo.server.stop(None)


@pytest.mark.parametrize("entered", ["", "gray"], indirect=True)
def test_grpc_calls_send_the_members_they_can_and_succeed(grpc_echo: _Echo, entered: context.RequestContext) -> None:
    GRPC.instrument(AgentRuntime(config=AgentConfig(service="grpc-client")))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_echo.port}") as channel:
            sync_reply = channel.unary_unary("/probe.Echo/Unary")(b"x", timeout=10)

        async def aio_call() -> bytes:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_echo.port}") as channel:
                return bytes(await channel.unary_unary("/probe.Echo/Unary")(b"x", timeout=10))

        aio_reply = asyncio.run(aio_call())
    finally:
        GRPC.uninstrument()
    expected = f"{KEPT},tidegate.lane=gray" if entered.lane else KEPT
    assert (sync_reply.decode(), aio_reply.decode()) == (expected, expected)


REDIS = os.environ.get("TIDEGATE_TEST_REDIS")
RABBITMQ = os.environ.get("TIDEGATE_TEST_RABBITMQ")


@pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (scripts/test.sh sets it)")
@pytest.mark.parametrize("entered", ["gray"], indirect=True)
def test_redis_streams_messages_from_such_a_request_carry_the_lane(entered: context.RequestContext) -> None:
    import redis

    from tidegate.agent.instrumentation.redis import INSTRUMENTOR as REDIS_STREAMS
    from tidegate.agent.instrumentation.redis import lane_of

    REDIS_STREAMS.instrument(AgentRuntime(config=AgentConfig(service="producer")))
    stream = f"unsendable-{uuid.uuid4().hex}"
    try:
        client = redis.Redis.from_url(str(REDIS))
        client.xadd(stream, {"order": "1"})
        client.xadd(stream, {"order": "2", "tidegate.lane": b"caf\xc3\xa9"})  # a lane field no lane name can be
        messages = client.xrange(stream)
        client.delete(stream)
    finally:
        REDIS_STREAMS.uninstrument()
    assert [lane_of(fields) for _, fields in messages] == ["gray", ""]


@pytest.mark.skipif(not RABBITMQ, reason="TIDEGATE_TEST_RABBITMQ is not set (scripts/test.sh sets it)")
@pytest.mark.parametrize("entered", ["gray"], indirect=True)
def test_rabbitmq_messages_carry_only_sendable_baggage(entered: context.RequestContext) -> None:
    aio_pika = pytest.importorskip("aio_pika")
    from tidegate.agent.instrumentation.aio_pika import INSTRUMENTOR as AMQP

    async def round_trip() -> dict[str, Any]:
        connection = await aio_pika.connect(str(RABBITMQ))
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"unsendable-{uuid.uuid4().hex}", auto_delete=True)
            await channel.default_exchange.publish(
                aio_pika.Message(b"x", headers={"baggage": "own=1,mine=caf\xe9"}), routing_key=queue.name
            )
            message = await queue.get(timeout=10)
            await message.ack()
            return dict(message.headers)

    AMQP.instrument(AgentRuntime(config=AgentConfig(service="producer")))
    try:
        headers = asyncio.run(round_trip())
    finally:
        AMQP.uninstrument()
    assert headers["tidegate.lane"] == "gray"
    assert headers["baggage"] == "own=1,tidegate.lane=gray"
