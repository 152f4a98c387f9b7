"""Inbound trust (issue 11, item 4): a caller's name and lane are believed only from governed peers.

The core decision on a real directory, the ASGI and WSGI middlewares over in-process requests from
an outside address (httpx's transports set the peer), and the per-origin node cap of the governor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.core.test_flow import governor, passes
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.asgi import wrap_asgi
from tidegate.agent.instrumentation.wsgi import wrap_wsgi
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime, set_runtime
from tidegate.core import context
from tidegate.core.directory import ServiceDirectory
from tidegate.core.flow import FlowRule
from tidegate.core.governor import FOLDED_ORIGIN, MAX_ORIGIN_NODES
from tidegate.core.instance import Instance
from tidegate.core.trust import EdgeMode, InboundTrust, parse_edge

OUTSIDE = "203.0.113.9"
PEER = "10.0.0.5"
SPOOF = {"x-tidegate-consumer": "frontend; admin=10.0.0.5:9100", "baggage": "tidegate.lane=gray,user=42"}


def _directory(host: str = PEER) -> ServiceDirectory:
    directory = ServiceDirectory()
    directory.replace(1, [Instance("f", "frontend", host, 9000, admin_port=9100), Instance("o", "orders", "10.0.0.7", 8000)])
    return directory


def test_only_governed_peers_are_believed_in_auto_mode() -> None:
    auto = InboundTrust(EdgeMode.AUTO, _directory())
    assert auto.trusts(PEER) and auto.trusts("::ffff:10.0.0.5")
    assert not auto.trusts(OUTSIDE) and not auto.trusts("") and not auto.trusts("127.0.0.1")  # nothing advertised on loopback
    assert InboundTrust(EdgeMode.AUTO, _directory("127.0.0.1")).trusts("127.0.0.1")  # one host: loopback peers are governed
    assert not InboundTrust(EdgeMode.ON, _directory()).trusts(PEER)
    assert InboundTrust(EdgeMode.OFF, _directory()).trusts(OUTSIDE)


def test_the_edge_setting_names_a_bad_value() -> None:
    assert parse_edge("") is EdgeMode.AUTO and parse_edge(" ON ") is EdgeMode.ON
    with pytest.raises(ValueError, match="TIDEGATE_EDGE"):
        parse_edge("maybe")


def test_an_outside_callers_name_and_lane_are_dropped_other_members_kept() -> None:
    found = context.from_headers(SPOOF["baggage"], SPOOF["x-tidegate-consumer"])
    kept = InboundTrust(EdgeMode.AUTO, _directory()).apply(found, OUTSIDE)
    assert (kept.origin, kept.origin_admin, kept.lane, kept.baggage) == ("", "", "", "user=42")
    assert InboundTrust(EdgeMode.AUTO, _directory()).apply(found, PEER) is found
    allowed = InboundTrust(EdgeMode.AUTO, _directory()).apply(found, OUTSIDE, clients_set_lane=True)
    assert (allowed.origin, allowed.lane) == ("", "gray")


@pytest.fixture
def runtime() -> Iterator[AgentRuntime]:
    runtime = AgentRuntime(config=AgentConfig(service="orders"), directory=_directory())
    set_runtime(runtime)
    try:
        yield runtime
    finally:
        set_runtime(None)


def _seen() -> dict[str, str]:
    now = context.current()
    return {"origin": now.origin, "lane": now.lane, "baggage": now.baggage}


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    body = httpx.Response(200, json=_seen()).content
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [httpx.Response(200, json=_seen()).content]


@pytest.mark.parametrize("peer, believed", [(OUTSIDE, False), (PEER, True)])
def test_asgi_believes_the_header_only_from_a_governed_peer(runtime: AgentRuntime, peer: str, believed: bool) -> None:
    import asyncio

    async def call() -> dict[str, str]:
        transport = httpx.ASGITransport(app=wrap_asgi(_asgi_app, AgentMetrics()), client=(peer, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
            return dict((await client.get("/x", headers=SPOOF)).json())

    seen = asyncio.run(call())
    expected = (
        {"origin": "frontend", "lane": "gray", "baggage": SPOOF["baggage"]}
        if believed
        else {"origin": "", "lane": "", "baggage": "user=42"}
    )
    assert seen == expected


@pytest.mark.parametrize("peer, believed", [(OUTSIDE, False), (PEER, True)])
def test_wsgi_believes_the_header_only_from_a_governed_peer(runtime: AgentRuntime, peer: str, believed: bool) -> None:
    transport = httpx.WSGITransport(app=wrap_wsgi(_wsgi_app, AgentMetrics()), remote_addr=peer)
    seen = httpx.Client(transport=transport, base_url="http://orders").get("/x", headers=SPOOF).json()
    assert (seen["origin"], seen["lane"]) == (("frontend", "gray") if believed else ("", ""))


def test_origin_nodes_are_capped_and_a_named_origin_keeps_its_own_limit() -> None:
    gov = governor(FlowRule("r", 1, origin="frontend"), FlowRule("r", 1000, origin="other"))
    for n in range(MAX_ORIGIN_NODES + 500):
        passes(gov, "r", 5.0, tries=1, origin=f"caller-{n}")
    nodes = gov._slots["r"].by_origin
    assert len(nodes) <= MAX_ORIGIN_NODES + 1 and FOLDED_ORIGIN in nodes
    assert passes(gov, "r", 5.0, origin="frontend") == 1  # the named origin still has its own node and limit


def test_metrics_series_from_outside_are_capped_and_counted(runtime: AgentRuntime) -> None:
    """20,000 random paths and methods (issue 11, item 5): /metrics stays bounded, unknown methods are OTHER."""
    from tidegate.agent.metrics import FOLDED_ROUTE, MAX_INBOUND_SERIES, render

    metrics = AgentMetrics()
    client = httpx.Client(transport=httpx.WSGITransport(app=wrap_wsgi(_wsgi_app, metrics)), base_url="http://orders")
    for n in range(2000):
        word = "".join(chr(97 + int(d)) for d in str(n))  # letters only: the fallback route keeps a word
        client.request(f"M{n}X" if n % 2 else "GET", f"/{word}/{n}")
    text = render([metrics.snapshot()]).decode()
    assert 'method="M1X"' not in text and 'method="OTHER"' in text
    series = [line for line in text.splitlines() if line.startswith("tidegate_inbound_requests_total{")]
    assert len(series) <= MAX_INBOUND_SERIES + 2 and FOLDED_ROUTE in text
    folded = next(line for line in text.splitlines() if line.startswith("tidegate_metrics_folded_total"))
    assert float(folded.split()[-1]) == 2000 - MAX_INBOUND_SERIES


def _lane_document(lane: str, from_clients: bool) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": f"{lane}-lane"},
        "spec": {"lane": {"name": lane, "fromClients": from_clients}, "rules": [{"http": {"headers": {"x-tester": "1"}}}]},
    }


@pytest.mark.parametrize("from_clients", [True, False])
def test_a_lane_a_traffic_lane_opens_to_clients_is_kept_from_outside_others_not(runtime: AgentRuntime, from_clients: bool) -> None:
    from tidegate.agent import lanes
    from tidegate.core.rulebook import RuleBook, StoredRule

    book = RuleBook()
    document = _lane_document("gray", from_clients)
    book.put(StoredRule("default", "TrafficLane", "gray-lane", 1, document))
    lanes.install(book, "orders")
    try:
        transport = httpx.WSGITransport(app=wrap_wsgi(_wsgi_app, AgentMetrics()), remote_addr=OUTSIDE)
        client = httpx.Client(transport=transport, base_url="http://orders")
        gray = client.get("/x", headers=SPOOF).json()
        blue = client.get("/x", headers={**SPOOF, "baggage": "tidegate.lane=blue,user=42"}).json()
    finally:
        lanes.uninstall()
    assert (gray["origin"], gray["lane"]) == ("", "gray" if from_clients else "")  # the caller's name is never believed
    assert (blue["lane"], blue["baggage"]) == ("", "user=42")  # a lane no document opens stays closed to outside callers


def test_from_clients_must_be_a_boolean() -> None:
    from tidegate.errors import RuleError
    from tidegate.rules.lanes import parse_traffic_lane

    document = _lane_document("gray", True)
    assert parse_traffic_lane(document).lane.from_clients
    document["spec"]["lane"]["fromClients"] = "yes"
    with pytest.raises(RuleError, match="fromClients"):
        parse_traffic_lane(document)


def test_a_held_over_instance_that_expires_is_no_longer_a_governed_peer() -> None:
    """Expiry removes an instance and keeps the directory's revision: the trusted host set
    follows the directory's change counter, not its revision."""
    directory = ServiceDirectory()
    directory.replace(1, [Instance("f", "frontend", PEER, 9000)], epoch="one")
    auto = InboundTrust(EdgeMode.AUTO, directory)
    assert auto.trusts(PEER)
    directory.replace(2, [], epoch="two", now=0.0, grace_s=10.0)  # a restarted control plane: held over
    assert auto.trusts(PEER)
    generation = directory.generation
    directory.expire(now=11.0)  # it did not register again
    assert directory.revision == 2 and directory.generation > generation
    assert not auto.trusts(PEER)


def test_whether_this_process_advertises_loopback_is_worked_out_when_its_instances_change(
    runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not on every request that names a consumer: only when the lifecycle's instances (swapped
    whole at registration) or TIDEGATE_HOST change."""
    from tidegate.agent import trust

    class Lifecycle:
        instances = [Instance("o", "orders", "10.0.0.7", 8000)]

    asked: list[str] = []

    def counted(host: str) -> bool:
        asked.append(host)
        return host.startswith("127.")

    monkeypatch.setattr(trust, "is_loopback", counted)
    runtime.lifecycle = Lifecycle()  # type: ignore[assignment]
    for _ in range(100):
        decision = trust.trust()
        assert decision is not None and not decision.loopback_local
    assert asked == ["10.0.0.7"]
    Lifecycle.instances = [Instance("o", "orders", "127.0.0.1", 8000)]  # registered again, on loopback
    for _ in range(100):
        decision = trust.trust()
        assert decision is not None and decision.loopback_local
    assert asked == ["10.0.0.7", "127.0.0.1"]
