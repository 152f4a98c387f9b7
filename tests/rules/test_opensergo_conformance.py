"""OpenSergo conformance: its TrafficLane shape, every duration unit its CRDs allow, Sentinel resource names."""

from __future__ import annotations

import pytest

from tidegate.core.coloring import RequestView
from tidegate.errors import RuleError
from tidegate.rules import load_documents, validate
from tidegate.rules.faulttolerance import FaultToleranceRule, Strategy
from tidegate.rules.lanes import TrafficLane, compile_coloring

FT = "fault-tolerance.opensergo.io/v1alpha1"

# The specification's own sample (traffic-lane.md), with its stray tab made spaces.
SPEC_SAMPLE = """
apiVersion: traffic.opensergo.io/v1alpha1
kind: TrafficLane
metadata:
  name: tag-traffic-lane-rule
spec:
  selector:
    app: spring-cloud-a
  rules:
    traffic:
      http:
        headers:
          - X-User-Id:   # the name
            exact: 12345       # its value
        uri:
          exact: "/index"
    workload:
      selector:
        tag: gray
    lane:
      name: Gray
    traceIdBaggage: x-opensergo-traffic
"""


def never() -> float:
    raise AssertionError("no draw")


def test_the_specifications_own_traffic_lane_is_accepted_and_colors_as_written() -> None:
    [document] = load_documents(SPEC_SAMPLE)
    lane = validate(document)
    assert isinstance(lane, TrafficLane)
    assert lane.lane.lane == "gray"  # the workload tag: what instances carry and routing selects
    assert any("traceIdBaggage" in warning and "TIDEGATE_LANE_KEY" in warning for warning in lane.warnings)
    coloring, problems = compile_coloring([document])
    assert problems == []
    hit = RequestView("GET", "/index", {"x-user-id": "12345"})
    assert coloring.lane_for(hit, never, service="spring-cloud-a") == "gray"
    assert coloring.lane_for(RequestView("GET", "/other", {"x-user-id": "12345"}), never, service="spring-cloud-a") == ""
    assert coloring.lane_for(hit, never, service="another-app") == ""


def test_the_opensergo_shape_with_the_usual_header_list_and_no_workload() -> None:
    document = {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": "l"},
        "spec": {"rules": {"traffic": {"http": {"headers": [{"x-env": {"prefix": "gr"}}]}}, "lane": {"name": "gray"}}},
    }
    lane = validate(document)
    assert lane.lane.lane == "gray" and lane.warnings == ()
    with pytest.raises(RuleError) as refused:
        validate({**document, "spec": {**document["spec"], "lane": {"name": "gray"}}})
    assert refused.value.field == "spec.lane"
    with pytest.raises(RuleError) as no_traffic:
        validate({**document, "spec": {"rules": {"lane": {"name": "gray"}}}})
    assert no_traffic.value.field == "spec.rules.traffic"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("2m", 120.0), ("2min", 120.0), ("2minute", 120.0), ("1h", 3600.0), ("1d", 86400.0), ("1.5s", 1.5)],
)
def test_every_duration_unit_of_the_opensergo_crds(text: str, seconds: float) -> None:
    document = {
        "apiVersion": FT,
        "kind": "ThrottlingStrategy",
        "metadata": {"name": "t"},
        "spec": {"minIntervalOfRequests": "10ms", "queueTimeout": text},
    }
    strategy = validate(document)
    assert isinstance(strategy, Strategy) and dict(strategy.params)["max_queue_s"] == pytest.approx(seconds)


def _rule(target: str) -> dict:
    return {
        "apiVersion": FT,
        "kind": "FaultToleranceRule",
        "metadata": {"name": "r"},
        "spec": {
            "targets": [{"targetResourceName": target}],
            "strategies": [{"kind": "ConcurrencyLimitStrategy", "spec": {"maxConcurrency": 1}}],
        },
    }


@pytest.mark.parametrize(
    ("target", "read_as"), [("GET:/foo", "GET /foo"), ("post:/orders/{id}", "POST /orders/{id}"), ("/shop.Orders/Get", "/shop.Orders/Get")]
)
def test_sentinel_resource_names_are_aliases(target: str, read_as: str) -> None:
    rule = validate(_rule(target))
    assert isinstance(rule, FaultToleranceRule) and rule.targets == (read_as,)


def test_a_bare_path_is_refused_saying_what_would_match() -> None:
    with pytest.raises(RuleError) as refused:
        validate(_rule("/foo"))
    assert refused.value.field == "spec.targets[0].targetResourceName"
    assert "'GET /foo'" in refused.value.reason and "gRPC" in refused.value.reason


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("http://orders/api/x", "'http://orders'"),
        ("https://orders", "'http://orders'"),
        ("http://orders:8080", "'http://orders'"),
        ("sql:SELECT * FROM orders WHERE id = 1", "sql:select * from orders where id = ?"),
        ("get /x", "'GET /x'"),
        ("GET /x?y=1", "query string"),
    ],
)
def test_a_target_that_can_never_match_is_warned_about(target: str, needle: str) -> None:
    rule = validate(_rule(target))
    assert len(rule.warnings) == 1 and needle in rule.warnings[0] and "spec.targets[0].targetResourceName" in rule.warnings[0]


@pytest.mark.parametrize(
    "target", ["GET /orders/{id}", "http://orders", "sql:select * from orders where id = ?", "pricing", "/shop.Orders/Get"]
)
def test_targets_that_may_match_carry_no_warning(target: str) -> None:
    assert validate(_rule(target)).warnings == ()
