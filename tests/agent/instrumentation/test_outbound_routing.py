"""Outbound calls by service name through httpx (sync and async), requests and aiohttp, against real servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest
import requests
import yarl

from tests.agent.outbound_apps.clients import INSTRUMENTORS, LIBRARIES, Server, call, make_runtime, start_servers
from tests.support.procs import free_port
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance, InstanceState
from tidegate.errors import NoInstanceError

# The library's own error for "could not connect", which apps already catch.
CONNECT_ERRORS = {
    "httpx": httpx.ConnectError,
    "httpx-async": httpx.ConnectError,
    "requests": requests.ConnectionError,
    "aiohttp": aiohttp.ClientConnectionError,
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three instances of `orders` and one unrelated server ("other"), real uvicorn processes."""
    yield from start_servers(["orders-1", "orders-2", "orders-3", "other"], tmp_path_factory.mktemp("servers"))


@pytest.fixture
def orders(servers: list[Server]) -> list[Server]:
    return servers[:3]


@pytest.fixture
def other(servers: list[Server]) -> Server:
    return servers[3]


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runtime(library: str, orders: list[Server]) -> Iterator[AgentRuntime]:
    runtime = make_runtime()
    runtime.directory.replace(1, [s.instance() for s in orders], ["orders"])
    instrumentor = INSTRUMENTORS[library]
    instrumentor.instrument(runtime)
    try:
        yield runtime
    finally:
        instrumentor.uninstrument()


def test_calls_by_name_reach_every_instance(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    replies = call(library, ["http://orders/who?x=1"] * 300)
    assert {r.status for r in replies} == {200}
    counts = Counter(r.body["id"] for r in replies)
    assert set(counts) == {s.id for s in orders}
    assert min(counts.values()) >= 50, counts  # an even spread gives 100 each
    sample = replies[0].body
    assert sample["path"] == "/who" and sample["query"] == "x=1"
    by_id = {s.id: s for s in orders}
    # The Host header names the instance's address (the URL was rewritten to it).
    assert all(r.body["host"] == f"127.0.0.1:{by_id[r.body['id']].port}" for r in replies)
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]
    observed = runtime.metrics.calls  # type: ignore[union-attr]
    assert len(observed) == 300 and {(service, ok) for service, ok, _ in observed} == {("orders", True)}


def test_the_callers_port_is_ignored_for_a_service_name(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    replies = call(library, ["http://orders:8000/x"] * 30)
    assert {r.status for r in replies} == {200}
    assert {r.body["id"] for r in replies} <= {s.id for s in orders}
    assert {r.body["path"] for r in replies} == {"/x"}


def test_other_hosts_are_untouched(library: str, runtime: AgentRuntime, other: Server) -> None:
    replies = call(library, [f"http://127.0.0.1:{other.port}/plain"] * 5)
    assert [r.body["id"] for r in replies] == ["other"] * 5
    assert replies[0].body["host"] == f"127.0.0.1:{other.port}"
    assert runtime.metrics.calls == []  # type: ignore[union-attr]


def test_known_service_without_live_instance_raises_no_instance_error(library: str, runtime: AgentRuntime) -> None:
    runtime.directory.replace(2, [], ["orders"])
    with pytest.raises(NoInstanceError, match="'orders'") as raised:
        call(library, ["http://orders/x"])
    assert raised.value.service == "orders"
    assert isinstance(raised.value, ConnectionError)
    assert isinstance(raised.value, CONNECT_ERRORS[library])  # the app's existing handling still catches it


def test_draining_instance_counts_as_no_live_instance(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    runtime.directory.replace(2, [Instance("d", "orders", "127.0.0.1", orders[0].port, state=InstanceState.DRAINING)])
    with pytest.raises(NoInstanceError, match="'orders'"):
        call(library, ["http://orders/x"])


def test_a_removed_instance_gets_no_more_calls(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    assert {r.body["id"] for r in call(library, ["http://orders/a"] * 60)} == {s.id for s in orders}
    runtime.directory.remove(2, "orders", orders[0].id)
    after = Counter(r.body["id"] for r in call(library, ["http://orders/b"] * 60))
    assert set(after) == {orders[1].id, orders[2].id}


def test_server_errors_are_observed_as_not_ok(library: str, runtime: AgentRuntime) -> None:
    replies = call(library, ["http://orders/fail"] * 6)
    assert {r.status for r in replies} == {500}
    assert {ok for _, ok, _ in runtime.metrics.calls} == {False}  # type: ignore[union-attr]
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]


def test_redirects_stay_on_the_instance(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    options = {"follow_redirects": True} if library.startswith("httpx") else {}
    replies = call(library, ["http://orders/redirect"] * 6, **options)
    assert {r.body["path"] for r in replies} == {"/after-redirect"}
    assert {r.body["id"] for r in replies} <= {s.id for s in orders}


def test_refused_connection_is_retried_on_another_instance(library: str, runtime: AgentRuntime, orders: list[Server]) -> None:
    dead = Instance("dead", "orders", "127.0.0.1", free_port())  # registered, but nothing listens there
    runtime.directory.replace(2, [dead, orders[0].instance()], ["orders"])
    replies = call(library, ["http://orders/x"] * 40)
    assert {r.body["id"] for r in replies} == {orders[0].id}
    outcomes = Counter(ok for _, ok, _ in runtime.metrics.calls)  # type: ignore[union-attr]
    assert outcomes[True] == 40 and outcomes[False] >= 1  # the dead one was tried, and failed over
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]


def test_when_every_instance_refuses_the_librarys_error_is_raised(library: str, runtime: AgentRuntime) -> None:
    dead = [Instance(f"dead-{k}", "orders", "127.0.0.1", free_port()) for k in range(2)]
    runtime.directory.replace(2, dead, ["orders"])
    with pytest.raises(CONNECT_ERRORS[library]) as raised:
        call(library, ["http://orders/x"])
    assert not isinstance(raised.value, NoInstanceError)
    assert [ok for _, ok, _ in runtime.metrics.calls] == [False, False]  # type: ignore[union-attr]  # each tried once
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]


@pytest.mark.parametrize("library", ["httpx", "httpx-async", "aiohttp"])  # requests has no base URL
def test_a_base_url_naming_a_service_routes(runtime: AgentRuntime, library: str, orders: list[Server]) -> None:
    replies = call(library, ["/rel"] * 9, base_url="http://orders")
    assert {r.body["path"] for r in replies} == {"/rel"}
    assert {r.body["id"] for r in replies} <= {s.id for s in orders}


@pytest.mark.parametrize("library", ["aiohttp"])
def test_aiohttp_accepts_a_url_object(runtime: AgentRuntime, library: str, orders: list[Server]) -> None:
    async def fetch() -> dict[str, str]:
        async with aiohttp.ClientSession() as session:
            async with session.get(yarl.URL("http://orders/obj?q=1")) as response:
                return dict(await response.json())

    body = asyncio.run(fetch())
    assert body["id"] in {s.id for s in orders} and (body["path"], body["query"]) == ("/obj", "q=1")


def test_uninstrument_restores_the_original_behaviour(library: str, orders: list[Server], tmp_path: Path) -> None:
    runtime = make_runtime()
    runtime.directory.replace(1, [s.instance() for s in orders], ["orders"])
    instrumentor = INSTRUMENTORS[library]
    originals = {
        "httpx": (httpx.Client, "send"),
        "httpx-async": (httpx.AsyncClient, "send"),
        "requests": (requests.Session, "send"),
        "aiohttp": (aiohttp.ClientSession, "_request"),
    }
    owner, name = originals[library]
    before = owner.__dict__[name]
    instrumentor.instrument(runtime)
    try:
        assert owner.__dict__[name] is not before
        assert call(library, ["http://orders/x"])[0].status == 200
    finally:
        instrumentor.uninstrument()
    assert owner.__dict__[name] is before
    # "orders" is no host name here: the library itself now fails to resolve it.
    with pytest.raises(CONNECT_ERRORS[library]) as raised:
        call(library, ["http://orders/x"])
    assert not isinstance(raised.value, NoInstanceError)
    assert len(runtime.metrics.calls) == 1  # type: ignore[union-attr]  # only the routed call


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_calls_from_many_threads_keep_in_flight_true(runtime: AgentRuntime, library: str, orders: list[Server]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda _: call(library, ["http://orders/t"] * 15), range(8)))
    replies = [reply for batch in batches for reply in batch]
    assert len(replies) == 120 and {r.status for r in replies} == {200}
    assert {r.body["id"] for r in replies} == {s.id for s in orders}
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]  # every acquire was released


@pytest.mark.parametrize("library", ["httpx"])
def test_a_streamed_httpx_response_routes_and_releases(runtime: AgentRuntime, library: str, orders: list[Server]) -> None:
    with httpx.Client(trust_env=False, timeout=10) as client:
        with client.stream("GET", "http://orders/streamed") as response:
            assert response.status_code == 200
            assert str(response.url) == "http://orders/streamed"  # the caller's URL, given back after the call
            body = response.read()
    assert b'"/streamed"' in body
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]
