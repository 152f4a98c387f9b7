"""The request's lane and the caller's identity ride on every outbound call, whatever the library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.outbound_apps.clients import INSTRUMENTORS, LIBRARIES, Server, call, make_runtime, start_servers
from tidegate.agent.runtime import AgentRuntime
from tidegate.core import context


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    yield from start_servers(["orders-1", "other"], tmp_path_factory.mktemp("servers"))


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runtime(library: str, servers: list[Server]) -> Iterator[AgentRuntime]:
    runtime = make_runtime()
    runtime.consumer = context.consumer_value("frontend", "127.0.0.1:4567")
    runtime.directory.replace(1, [servers[0].instance()], ["orders"])
    INSTRUMENTORS[library].instrument(runtime)
    try:
        yield runtime
    finally:
        INSTRUMENTORS[library].uninstrument()


@pytest.fixture
def in_gray_lane() -> Iterator[None]:
    token = context.enter(context.from_headers("user=42;p=1", "").with_lane("gray"))
    try:
        yield
    finally:
        context.leave(token)


def test_calls_to_services_carry_lane_and_consumer(library: str, runtime: AgentRuntime, in_gray_lane: None) -> None:
    (reply,) = call(library, ["http://orders/x"])
    assert reply.body["baggage"] == "user=42;p=1,tidegate.lane=gray"
    assert reply.body["consumer"] == "frontend; admin=127.0.0.1:4567"


def test_calls_to_other_hosts_carry_the_lane_but_not_the_consumer(
    library: str, runtime: AgentRuntime, servers: list[Server], in_gray_lane: None
) -> None:
    (reply,) = call(library, [f"http://127.0.0.1:{servers[1].port}/x"])
    assert reply.body["baggage"] == "user=42;p=1,tidegate.lane=gray"
    assert reply.body["consumer"] == ""


def test_no_context_adds_no_baggage(library: str, runtime: AgentRuntime) -> None:
    (reply,) = call(library, ["http://orders/x"])
    assert reply.body["baggage"] == ""
    assert reply.body["consumer"].startswith("frontend")


@pytest.mark.parametrize("library", ["httpx", "httpx-async", "aiohttp"])
def test_the_callers_own_baggage_is_kept_and_gets_the_lane(library: str, runtime: AgentRuntime, in_gray_lane: None) -> None:
    (reply,) = call(library, ["http://orders/x"], headers={"baggage": "trace=abc"})
    assert reply.body["baggage"] == "trace=abc,tidegate.lane=gray"


def test_at_the_baggage_limits_the_lane_still_reaches_the_next_hop(
    library: str, runtime: AgentRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """180 members already (the W3C limit): the last one makes room for the lane, logged once."""
    members = [f"k{i}=v" for i in range(180)]
    token = context.enter(context.from_headers(",".join(members), "").with_lane("gray"))
    try:
        replies = call(library, ["http://orders/x", "http://orders/y"])
    finally:
        context.leave(token)
    assert [reply.body["baggage"] for reply in replies] == [",".join([*members[:-1], "tidegate.lane=gray"])] * 2
    warnings = [r.getMessage() for r in caplog.records if "outbound baggage" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) <= 1 and all("'k179'" in w for w in warnings)
