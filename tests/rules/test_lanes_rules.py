"""TrafficLane and CanaryRule documents: parsing, errors naming document/field/reason, compiling."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.core.coloring import RequestKey, RequestView, Source
from tidegate.core.instance import Instance
from tidegate.core.lanes import CanaryRule, LaneRule, group_by_tag
from tidegate.errors import RuleError
from tidegate.rules import load_documents, validate
from tidegate.rules.lanes import TrafficLane, compile_coloring, compile_lane_routing

EXAMPLE = """
apiVersion: traffic.opensergo.io/v1alpha1
kind: TrafficLane
metadata:
  name: gray-testers
spec:
  lane: {name: gray, strict: true}
  selector: {app: web}
  priority: 10
  rules:
    - http:
        headers:
          X-User-Id: {regex: "1[0-9]{4}"}
        uri: {prefix: /api/}
        method: get
    - http:
        cookies: {beta: {present: true}}
    - http:
        query: {env: gray}
    - percent: 5
      stickyKey: {header: X-User-Id}
---
apiVersion: traffic.opensergo.io/v1alpha1
kind: CanaryRule
metadata:
  name: orders-v2
spec:
  service: orders
  tag: v2
  percent: 10
  stickyKey: {cookie: uid}
"""


def never() -> float:
    raise AssertionError("no draw expected")


def lane_doc(spec: dict[str, Any], name: str = "gray") -> dict[str, Any]:
    return {"apiVersion": "traffic.opensergo.io/v1alpha1", "kind": "TrafficLane", "metadata": {"name": name}, "spec": spec}


def canary_doc(spec: dict[str, Any], name: str = "orders-v2") -> dict[str, Any]:
    return {"apiVersion": "traffic.opensergo.io/v1alpha1", "kind": "CanaryRule", "metadata": {"name": name}, "spec": spec}


def test_example_documents_parse() -> None:
    lane_document, canary_document = load_documents(EXAMPLE)
    lane = validate(lane_document)
    assert isinstance(lane, TrafficLane)
    assert lane.lane == LaneRule("gray", strict=True)
    assert lane.priority == 10 and len(lane.rules) == 4
    assert all(rule.services == frozenset({"web"}) for rule in lane.rules)
    assert validate(canary_document) == CanaryRule("orders", "v2", 10.0, RequestKey(Source.COOKIE, "uid"))


def test_compiled_coloring_matches_like_the_document_says() -> None:
    lane_document, _ = load_documents(EXAMPLE)
    coloring, problems = compile_coloring([lane_document])
    assert problems == []

    def lane(path: str = "/", method: str = "GET", headers: dict[str, str] | None = None, query: str = "") -> str:
        return coloring.lane_for(RequestView(method, path, headers or {}, query), lambda: 0.99, service="web")

    assert lane("/api/x", headers={"x-user-id": "12345"}) == "gray"
    assert lane("/api/x", method="POST", headers={"x-user-id": "12345"}) == ""
    assert lane("/web", headers={"x-user-id": "12345"}) == ""
    assert lane(headers={"cookie": "beta=1"}) == "gray"
    assert lane(query="env=gray") == "gray"
    assert lane() == ""
    assert coloring.lane_for(RequestView("GET", "/", {}, "env=gray"), never, service="orders") == ""


def test_opensergo_list_form_of_headers() -> None:
    document = lane_doc({"lane": {"name": "gray"}, "rules": [{"http": {"headers": [{"X-User-Id": {"exact": 12345}}]}}]})
    coloring, problems = compile_coloring([document])
    assert problems == []
    assert coloring.lane_for(RequestView("GET", "/", {"x-user-id": "12345"}), never) == "gray"


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({}, "spec.lane", "must be a mapping"),
        ({"lane": {"name": "no spaces"}}, "spec.lane.name", "lane name"),
        ({"lane": {"name": "gray", "strict": "yes"}}, "spec.lane.strict", "true or false"),
        ({"lane": {"name": "gray", "colour": "x"}}, "spec.lane.colour", "unknown field"),
        ({"lane": {"name": "gray"}, "rulez": []}, "spec.rulez", "unknown field"),
        ({"lane": {"name": "gray"}, "priority": 1.5}, "spec.priority", "integer"),
        ({"lane": {"name": "gray"}, "selector": {"app": ""}}, "spec.selector", "non-empty"),
        ({"lane": {"name": "gray"}, "rules": {}}, "spec.rules", "must be a list"),
        ({"lane": {"name": "gray"}, "rules": [{}]}, "spec.rules[0]", "at least one"),
        ({"lane": {"name": "gray"}, "rules": [{"http": {"uri": {"regex": "("}}}]}, "spec.rules[0].http.uri.regex", "regular expression"),
        ({"lane": {"name": "gray"}, "rules": [{"http": {"uri": {"exact": "/", "prefix": "/"}}}]}, "spec.rules[0].http.uri", "exactly one"),
        ({"lane": {"name": "gray"}, "rules": [{"http": {"uri": {"glob": "/*"}}}]}, "spec.rules[0].http.uri.glob", "unknown field"),
        (
            {"lane": {"name": "gray"}, "rules": [{"http": {"headers": {"x": {"present": False}}}}]},
            "spec.rules[0].http.headers.x.present",
            "present: true",
        ),
        ({"lane": {"name": "gray"}, "rules": [{"http": {"body": "x"}}]}, "spec.rules[0].http.body", "unknown field"),
        ({"lane": {"name": "gray"}, "rules": [{"percent": 101}]}, "spec.rules[0].percent", "0 to 100"),
        ({"lane": {"name": "gray"}, "rules": [{"percent": True}]}, "spec.rules[0].percent", "0 to 100"),
        (
            {"lane": {"name": "gray"}, "rules": [{"percent": 5, "stickyKey": {"header": "a", "cookie": "b"}}]},
            "spec.rules[0].stickyKey",
            "exactly one",
        ),
        ({"lane": {"name": "gray"}, "rules": [{"stickyKey": {"header": "a"}}]}, "spec.rules[0].stickyKey", "percent"),
    ],
)
def test_invalid_traffic_lane_names_document_field_and_reason(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate(lane_doc(spec))
    assert caught.value.document == "TrafficLane/gray"
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"tag": "v2", "percent": 5}, "spec.service", "required"),
        ({"service": "orders", "percent": 5}, "spec.tag", "lane name"),
        ({"service": "orders", "tag": "v2"}, "spec.percent", "required"),
        ({"service": "orders", "tag": "v2", "percent": -1}, "spec.percent", "0 to 100"),
        ({"service": "orders", "tag": "v2", "percent": 5, "stickyKey": {"body": "x"}}, "spec.stickyKey.body", "unknown field"),
        ({"service": "orders", "tag": "v2", "percent": 5, "stickyKey": {"header": ""}}, "spec.stickyKey.header", "non-empty"),
        ({"service": "orders", "tag": "v2", "percent": 5, "weight": 1}, "spec.weight", "unknown field"),
    ],
)
def test_invalid_canary_names_document_field_and_reason(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate(canary_doc(spec))
    assert caught.value.document == "CanaryRule/orders-v2"
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_coloring_orders_documents_by_priority_then_name() -> None:
    everything = [{"http": {"uri": {"prefix": "/"}}}]
    documents = [
        lane_doc({"lane": {"name": "c"}, "rules": everything}, name="c"),
        lane_doc({"lane": {"name": "b"}, "priority": -1, "rules": everything}, name="b"),
        lane_doc({"lane": {"name": "a"}, "rules": everything}, name="a"),
    ]
    coloring, _ = compile_coloring(documents)
    assert [rule.lane for rule in coloring.rules] == ["b", "a", "c"]


def test_compile_leaves_out_invalid_documents_and_reports_them() -> None:
    good = lane_doc({"lane": {"name": "gray"}, "rules": [{"http": {"uri": "/x"}}]})
    bad = lane_doc({"lane": {"name": "bad lane"}}, name="bad")
    coloring, problems = compile_coloring([bad, good, {"kind": "CanaryRule"}])
    assert [rule.lane for rule in coloring.rules] == ["gray"]
    assert len(problems) == 2 and problems[0].document == "TrafficLane/bad"


def test_lane_routing_from_documents() -> None:
    documents = [
        lane_doc({"lane": {"name": "gray", "strict": True}}, name="gray"),
        lane_doc({"lane": {"name": "blue"}}, name="blue"),
    ]
    canaries = [canary_doc({"service": "orders", "tag": "v2", "percent": 100})]
    routing, problems = compile_lane_routing(documents, canaries)
    assert problems == []
    assert routing.is_strict("gray") and not routing.is_strict("blue")
    base = Instance(id="b", service="orders", host="h", port=1)
    canary = Instance(id="c", service="orders", host="h", port=2, tag="v2")
    groups = group_by_tag([base, canary])
    assert routing.select("orders", groups, "", lambda: 0.5).instances == (canary,)
    assert routing.select("orders", groups, "gray", never).instances == ()


def test_canary_conflicts_are_reported() -> None:
    canaries = [
        canary_doc({"service": "orders", "tag": "v2", "percent": 60, "stickyKey": {"header": "a"}}, name="a"),
        canary_doc({"service": "orders", "tag": "v3", "percent": 60, "stickyKey": {"cookie": "b"}}, name="b"),
    ]
    routing, problems = compile_lane_routing([], canaries)
    assert [p.field for p in problems] == ["spec.percent", "spec.stickyKey"]
    assert routing.sticky_key("orders") == RequestKey(Source.HEADER, "a")
