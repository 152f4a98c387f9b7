"""gRPC inbound trust (issue 11, item 4): a served call's `x-tidegate-consumer` and lane are believed
only from a governed peer, as for HTTP, both in the context its handler runs in and as the origin
its flow admission counts.

Real grpcio servers (sync and grpc.aio) in this process, with the instrumentor applied and an agent
runtime whose directory says who is governed; the client calls over loopback. A peer on loopback is
governed when the directory holds instances advertised on loopback (every service on one host), not
when it lists only other hosts. A flow rule refuses every call whose origin is `frontend`: a caller
believed to be frontend is refused, one whose claim is dropped is not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tidegate.agent import trust
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.grpc import INSTRUMENTOR, peer_host
from tidegate.agent.runtime import AgentRuntime, set_runtime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core import context
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import StoredRule

SPOOF = (("x-tidegate-consumer", "frontend"), ("baggage", "tidegate.lane=gray,user=42"))
BELIEVED = {"origin": "frontend", "lane": "gray", "baggage": "tidegate.lane=gray,user=42"}
DROPPED = {"origin": "", "lane": "", "baggage": "user=42"}


def _seen() -> bytes:
    now = context.current()
    return json.dumps({"origin": now.origin, "lane": now.lane, "baggage": now.baggage}).encode()


def _no_frontend() -> dict[str, Any]:
    """Every call to /trust.Probe/Limited from the origin `frontend` is refused."""
    return {
        "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
        "kind": "FaultToleranceRule",
        "metadata": {"name": "no-frontend"},
        "spec": {
            "selector": {"app": "orders"},
            "targets": [{"targetResourceName": "/trust.Probe/Limited"}],
            "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": 0, "statDurationSeconds": 1, "origin": "frontend"}}],
        },
    }


def _runtime(governed: bool) -> AgentRuntime:
    directory = ServiceDirectory()
    host = "127.0.0.1" if governed else "10.0.0.7"  # the callers' services, on this host or elsewhere
    directory.replace(1, [Instance("f", "frontend", host, 9000)])
    runtime = AgentRuntime(config=AgentConfig(service="orders"), directory=directory)
    stability = Stability(runtime, events=StabilityEvents(lambda event: None, "orders", flush_s=3600))
    runtime.add(stability)
    runtime.rulebook.add_listener(stability.on_rules_changed)
    runtime.rulebook.put(StoredRule("default", "FaultToleranceRule", "no-frontend", 1, _no_frontend()))
    return runtime


@pytest.fixture
def agent(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    edge, governed = request.param
    monkeypatch.setenv("TIDEGATE_EDGE", edge)
    monkeypatch.setattr(trust, "_trust", None)
    runtime = _runtime(governed)
    set_runtime(runtime)
    INSTRUMENTOR.instrument(runtime)
    try:
        yield
    finally:
        INSTRUMENTOR.uninstrument()
        set_runtime(None)


def _sync_calls() -> tuple[list[dict[str, str]], grpc.StatusCode]:
    """(what the unary and streaming handlers saw, the limited method's status) over a real sync server."""

    def who(request: bytes, servicer_context: Any) -> bytes:
        return _seen()

    def who_stream(request: bytes, servicer_context: Any) -> Iterator[bytes]:
        yield _seen()

    handler = grpc.method_handlers_generic_handler(
        "trust.Probe",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "WhoStream": grpc.unary_stream_rpc_method_handler(who_stream),
            "Limited": grpc.unary_unary_rpc_method_handler(who),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            seen = [json.loads(channel.unary_unary("/trust.Probe/Who")(b"x", metadata=SPOOF, timeout=20))]
            seen += [json.loads(reply) for reply in channel.unary_stream("/trust.Probe/WhoStream")(b"x", metadata=SPOOF, timeout=20)]
            try:
                channel.unary_unary("/trust.Probe/Limited")(b"x", metadata=SPOOF, timeout=20)
                status = grpc.StatusCode.OK
            except grpc.RpcError as error:
                status = error.code()
    finally:
        server.stop(None)
    return seen, status


async def _aio_calls() -> tuple[list[dict[str, str]], grpc.StatusCode]:
    """The same over a real grpc.aio server."""

    async def who(request: bytes, servicer_context: Any) -> bytes:
        return _seen()

    async def who_stream(request: bytes, servicer_context: Any) -> AsyncIterator[bytes]:
        yield _seen()

    handler = grpc.method_handlers_generic_handler(
        "trust.Probe",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "WhoStream": grpc.unary_stream_rpc_method_handler(who_stream),
            "Limited": grpc.unary_unary_rpc_method_handler(who),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            seen = [json.loads(await channel.unary_unary("/trust.Probe/Who")(b"x", metadata=SPOOF, timeout=20))]
            seen += [json.loads(reply) async for reply in channel.unary_stream("/trust.Probe/WhoStream")(b"x", metadata=SPOOF, timeout=20)]
            try:
                await channel.unary_unary("/trust.Probe/Limited")(b"x", metadata=SPOOF, timeout=20)
                status = grpc.StatusCode.OK
            except grpc.RpcError as error:
                status = error.code()
    finally:
        await server.stop(None)
    return seen, status


CASES = [
    # (TIDEGATE_EDGE, the loopback caller is governed, its claims believed)
    (("auto", False), False),
    (("auto", True), True),
    (("on", True), False),  # an entry service believes nobody
    (("off", False), True),  # every caller, as before issue 11
]


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize(("agent", "believed"), CASES, indirect=["agent"], ids=["auto-outside", "auto-governed", "on", "off"])
def test_a_served_call_believes_its_callers_name_and_lane_only_from_a_governed_peer(agent: None, believed: bool, mode: str) -> None:
    seen, limited = _sync_calls() if mode == "sync" else asyncio.run(_aio_calls())
    assert seen == [BELIEVED if believed else DROPPED] * 2
    # The origin admission counts is the believed one: a caller claiming to be frontend from
    # outside does not consume frontend's limit (here: is not refused by it).
    assert limited == (grpc.StatusCode.RESOURCE_EXHAUSTED if believed else grpc.StatusCode.OK)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.5:5678", "10.0.0.5"),
        ("ipv6:[::1]:5678", "::1"),
        ("ipv6:%5B::ffff:127.0.0.1%5D:5678", "::ffff:127.0.0.1"),
        ("ipv6:[fe80::1%25eth0]:5678", "fe80::1%eth0"),
        ("unix:/run/app.sock", ""),
        ("unix-abstract:app", ""),
        ("", ""),
        ("ipv4:", ""),
    ],
)
def test_the_peer_address_of_a_grpc_call(peer: str, host: str) -> None:
    assert peer_host(peer) == host
