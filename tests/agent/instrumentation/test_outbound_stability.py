"""Outbound calls to a service under a rule, through httpx (sync and async), requests and aiohttp, to a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests

import tidegate
from tests.agent.outbound_apps.clients import INSTRUMENTORS, LIBRARIES, Server, call, make_runtime, start_servers
from tests.agent.stability.stability_apps.support import windows
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.rulebook import StoredRule

# The library's own error a refused call also is, which apps already catch.
LIBRARY_ERRORS = {
    "httpx": httpx.HTTPError,
    "httpx-async": httpx.HTTPError,
    "requests": requests.RequestException,
    "aiohttp": aiohttp.ClientError,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_servers(["orders-1"], tmp_path_factory.mktemp("servers"))
    try:
        yield next(started)[0]
    finally:
        started.close()  # stops the server


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runtime(library: str, server: Server) -> Iterator[AgentRuntime]:
    runtime = make_runtime()
    runtime.metrics = AgentMetrics()
    runtime.directory.replace(1, [server.instance()], ["orders"])
    stability = Stability(runtime, events=StabilityEvents(lambda event: None, "consumer"))
    runtime.add(stability)
    runtime.rulebook.add_listener(stability.on_rules_changed)
    runtime.rulebook.put(
        StoredRule(
            "default",
            "FaultToleranceRule",
            "orders-limit",
            1,
            {
                "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
                "kind": "FaultToleranceRule",
                "metadata": {"name": "orders-limit"},
                "spec": {
                    "targets": [{"targetResourceName": "http://orders"}],
                    "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": 3, "statDurationSeconds": 1}}],
                },
            },
        )
    )
    instrumentor = INSTRUMENTORS[library]
    instrumentor.instrument(runtime)
    try:
        yield runtime
    finally:
        instrumentor.uninstrument()


def test_refused_calls_raise_the_blocked_error_that_is_also_the_librarys(library: str, runtime: AgentRuntime) -> None:
    passed = refused = 0
    started = time.monotonic()
    for _ in range(12):
        try:
            replies = call(library, ["http://orders/who"])
        except tidegate.FlowBlockedError as error:
            assert isinstance(error, LIBRARY_ERRORS[library])
            assert error.resource == "http://orders" and error.rule == "orders-limit/RateLimitStrategy[0]"
            refused += 1
        else:
            assert replies[0].status == 200
            passed += 1
    duration = time.monotonic() - started
    assert refused > 0
    assert 3 <= passed <= 3 * windows(duration)
    assert runtime.router.in_flight("orders") == {}  # type: ignore[union-attr]  # a refused call released its route
    row = next(r for r in runtime.metrics.snapshot()["resources"] if r[0] == "http://orders")  # type: ignore[union-attr]
    assert (row[1], row[2]) == (passed, refused)


@pytest.mark.parametrize("library", ["httpx"])  # the instrumentors share the fallback path
def test_a_configured_fallback_answers_instead(library: str, runtime: AgentRuntime) -> None:
    stability: Stability = runtime.capability(Stability)  # type: ignore[assignment]
    stability.set_outbound_fallback("orders", lambda error: httpx.Response(200, json={"fallback": error.rule}))
    with httpx.Client(trust_env=False, timeout=10) as client:
        bodies: list[Any] = [client.get("http://orders/who").json() for _ in range(10)]
    assert {"fallback": "orders-limit/RateLimitStrategy[0]"} in bodies
    assert sum("id" in body for body in bodies) >= 3


@pytest.mark.parametrize("library", ["httpx", "httpx-async"])
def test_a_refused_httpx_call_carries_its_request(library: str, runtime: AgentRuntime) -> None:
    with pytest.raises(httpx.HTTPError) as raised:
        for _ in range(12):  # one at a time: the threshold is 3 per second
            call(library, ["http://orders/who"])
    assert isinstance(raised.value, tidegate.FlowBlockedError)
    request = raised.value.request  # httpx's own errors carry the request; before, a refused call raised RuntimeError here
    assert request.method == "GET" and str(request.url) == "http://orders/who"


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_refused_call_is_refused_before_it_takes_a_balancer_slot(library: str, runtime: AgentRuntime) -> None:
    router = runtime.router
    assert router is not None
    routed: list[str] = []
    route = router.route

    def counting(host: str, *args: Any) -> Any:
        routed.append(host)
        return route(host, *args)

    router.route = counting  # type: ignore[method-assign]
    refused = 0
    for _ in range(12):
        try:
            call(library, ["http://orders/who"])
        except tidegate.FlowBlockedError:
            refused += 1
    assert refused > 0
    assert len(routed) == 12 - refused  # a refused call never asked the balancer for an instance
