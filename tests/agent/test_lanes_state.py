"""The agent's lane state and lane-aware routing, in process: rules from the rule book, real router."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from tidegate.agent import lanes
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.core import context
from tidegate.core.coloring import RequestView, sticky_bucket
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook, StoredRule
from tidegate.errors import NoInstanceError


def lane_doc(name: str = "gray-testers", lane: str = "gray", strict: bool = False, rules: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": name},
        "spec": {
            "lane": {"name": lane, "strict": strict},
            "rules": rules if rules is not None else [{"http": {"headers": {"x-lane": "gray"}}}],
        },
    }


def canary_doc(service: str = "stock", percent: float = 10) -> dict[str, Any]:
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "CanaryRule",
        "metadata": {"name": f"{service}-canary"},
        "spec": {"service": service, "tag": "gray", "percent": percent, "stickyKey": {"header": "x-user-id"}},
    }


def put(book: RuleBook, document: dict[str, Any], revision: int) -> None:
    book.put(StoredRule("default", document["kind"], document["metadata"]["name"], revision, document))


def stock(k: int, tag: str = "") -> Instance:
    return Instance(id=f"s{k}{tag}", service="stock", host="10.0.0.1", port=9000 + k, tag=tag)


def make(instances: list[Instance]) -> tuple[RuleBook, lanes.LaneState, OutboundRouter, ServiceDirectory]:
    book = RuleBook()
    state = lanes.LaneState(book, "frontend", draw=random.Random(3).random)
    directory = ServiceDirectory()
    directory.replace(1, instances)
    router = OutboundRouter(directory, rng=random.Random(1), lanes=state)
    return book, state, router, directory


def view(**headers: str) -> RequestView:
    return RequestView("GET", "/", headers)


def test_lane_requests_go_to_tagged_instances_and_base_requests_never_do() -> None:
    _, _, router, _ = make([stock(1), stock(2), stock(3, "gray")])
    assert {router.route("stock", None).instance.id for _ in range(100)} == {"s1", "s2"}  # type: ignore[union-attr]
    assert {router.route("stock", None, "gray").instance.id for _ in range(50)} == {"s3gray"}  # type: ignore[union-attr]
    # a lane with no instance of its own falls back to base ones
    assert {router.route("stock", None, "blue").instance.id for _ in range(50)} == {"s1", "s2"}  # type: ignore[union-attr]


def test_fallback_follows_the_directory_and_strict_lanes_refuse_clearly() -> None:
    book, _, router, directory = make([stock(1), stock(3, "gray")])
    directory.remove(2, "stock", "s3gray")
    assert router.route("stock", None, "gray").instance.id == "s1"  # type: ignore[union-attr]
    put(book, lane_doc(strict=True), 1)
    with pytest.raises(NoInstanceError) as refused:
        router.route("stock", None, "gray")
    assert refused.value.lane == "gray" and "'stock' in lane 'gray'" in str(refused.value)
    assert router.route("stock", None).instance.id == "s1"  # type: ignore[union-attr]


def test_a_lane_whose_instances_all_failed_to_connect_falls_back_to_base_unless_strict() -> None:
    book, _, router, _ = make([stock(1), stock(3, "gray")])
    assert router.route("stock", None, "gray", exclude={"s3gray"}).instance.id == "s1"  # type: ignore[union-attr]
    put(book, lane_doc(strict=True), 1)
    with pytest.raises(NoInstanceError):
        router.route("stock", None, "gray", exclude={"s3gray"})


def test_canary_sends_a_sticky_share_of_base_traffic_by_the_inbound_requests_key() -> None:
    book, state, router, _ = make([stock(1), stock(3, "gray")])
    put(book, canary_doc(percent=10), 1)
    assert state.active
    users = [str(u) for u in range(2000)]
    picked = {u: router.route("stock", None, request=view(**{"x-user-id": u})).instance.id for u in users}  # type: ignore[union-attr]
    expected = {u: "s3gray" if sticky_bucket(u, "stock") < 1000 else "s1" for u in users}
    assert picked == expected
    assert 100 < Counter(picked.values())["s3gray"] < 300
    again = {u: router.route("stock", None, request=view(**{"x-user-id": u})).instance.id for u in users[:200]}  # type: ignore[union-attr]
    assert again == {u: picked[u] for u in users[:200]}


def test_coloring_in_force_colors_requests_without_a_lane_and_keeps_the_request() -> None:
    book, state, _, _ = make([])
    lanes_before = state.coloring
    put(book, lane_doc(), 1)
    assert state.coloring is not lanes_before and state.active
    colored = state.color(context.EMPTY, view(**{"x-lane": "gray"}))
    assert colored.lane == "gray" and colored.request is not None
    assert state.color(context.EMPTY, view()).lane == ""
    kept = state.color(context.RequestContext(lane="blue"), view(**{"x-lane": "gray"}))
    assert kept.lane == "blue"


def test_an_invalid_document_keeps_its_previous_version_in_force() -> None:
    book, state, _, _ = make([])
    put(book, lane_doc(), 1)
    broken = lane_doc()
    broken["spec"]["rules"] = [{"http": {"headers": {"x-lane": {"regex": "("}}}}]
    put(book, broken, 2)
    assert state.color(context.EMPTY, view(**{"x-lane": "gray"})).lane == "gray"
    put(book, lane_doc(rules=[{"http": {"headers": {"x-lane": "gray2"}}}]), 3)
    assert state.color(context.EMPTY, view(**{"x-lane": "gray2"})).lane == "gray"
    assert state.color(context.EMPTY, view(**{"x-lane": "gray"})).lane == ""


def test_inbound_hooks_read_asgi_and_wsgi_requests_only_when_rules_are_in_force() -> None:
    book = RuleBook()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/x",
        "query_string": b"env=gray",
        "headers": [(b"x-lane", b"gray"), (b"cookie", b"uid=42")],
    }
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/x", "QUERY_STRING": "", "HTTP_X_LANE": "gray"}
    state = lanes.install(book, "frontend")
    try:
        assert lanes.color_asgi(scope, context.EMPTY) is context.EMPTY  # no rule: nothing looked at
        assert lanes.color_wsgi(environ, context.EMPTY) is context.EMPTY
        put(book, lane_doc(rules=[{"http": {"headers": {"x-lane": "gray"}}}, {"http": {"query": {"env": "blue"}}}]), 1)
        assert state.active
        colored = lanes.color_asgi(scope, context.EMPTY)
        assert colored.lane == "gray" and colored.request is not None
        assert colored.request.cookies == {"uid": "42"}
        assert lanes.color_wsgi(environ, context.EMPTY).lane == "gray"
        assert lanes.color_wsgi({**environ, "HTTP_X_LANE": "blue"}, context.EMPTY).lane == ""
    finally:
        lanes.uninstall()
