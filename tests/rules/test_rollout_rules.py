"""`Rollout` documents: the plan they give, and every refusal naming the document and the field."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.core.coloring import RequestKey, Source
from tidegate.core.rollout.judge import ALL, DEFAULT_GATES, Gate, LatencyTest, Metric
from tidegate.errors import RuleError
from tidegate.rules import load_documents, validate
from tidegate.rules.rollout import RolloutDocument

FULL = """
apiVersion: tidegate.io/v1alpha1
kind: Rollout
metadata: {name: orders-v2}
spec:
  service: orders
  tag: v2
  steps: [1, 20, 100]
  interval: 2m
  stickyKey: {header: X-User-Id}
  drainOld: false
  analysis:
    minRequests: 100
    failureLimit: 1
    consecutiveFailureLimit: 0
    inconclusiveLimit: 3
    metrics:
      - {name: errorRate, max: 1%, significance: 0.05}
      - {name: p99Latency, resource: "GET:/orders/{id}", max: 500ms, maxRatioToBase: 1.2}
    latencyTest: {alpha: 0.01, minShift: 20ms}
"""


def rollout(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "tidegate.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "orders-v2"}, "spec": spec}


def test_a_full_document_gives_its_plan() -> None:
    (document,) = load_documents(FULL)
    parsed = validate(document)
    assert isinstance(parsed, RolloutDocument)
    plan = parsed.plan
    assert (parsed.name, plan.service, plan.tag, plan.steps, plan.interval_s, plan.drain_old) == (
        "orders-v2",
        "orders",
        "v2",
        (1, 20, 100),
        120.0,
        False,
    )
    assert parsed.sticky_key == RequestKey(Source.HEADER, "x-user-id")
    analysis = plan.analysis
    assert (analysis.min_requests, analysis.failure_limit, analysis.consecutive_failure_limit, analysis.inconclusive_limit) == (
        100,
        1,
        0,
        3,
    )
    assert analysis.gates == (
        Gate(Metric.ERROR_RATE, ALL, 0.01, 0.05),
        Gate(Metric.P99_LATENCY, "GET /orders/{id}", 500.0, 1.2),  # Sentinel's route spelling read as tidegate's
    )
    assert analysis.latency_test == LatencyTest(ALL, 0.01, 20.0)


def test_defaults() -> None:
    plan = validate(rollout({"service": "orders", "tag": "v2"})).plan
    assert (plan.steps, plan.interval_s, plan.drain_old, plan.analysis.gates) == ((5, 10, 25, 50, 100), 60.0, True, DEFAULT_GATES)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"tag": "v2"}, "spec.service", "is required"),
        ({"service": "orders/x", "tag": "v2"}, "spec.service", "must be a service name"),
        ({"service": "orders"}, "spec.tag", "is required"),
        ({"service": "orders", "tag": "v 2"}, "spec.tag", "must be the new version's tag"),
        ({"service": "orders", "tag": "v2", "steps": [10, 5, 100]}, "spec.steps[1]", "steps increase"),
        ({"service": "orders", "tag": "v2", "steps": [10, 10, 100]}, "spec.steps[1]", "steps increase"),
        ({"service": "orders", "tag": "v2", "steps": [0, 100]}, "spec.steps[0]", "from 1 to 100"),
        ({"service": "orders", "tag": "v2", "steps": [50, 101]}, "spec.steps[1]", "from 1 to 100"),
        ({"service": "orders", "tag": "v2", "steps": [5, 50]}, "spec.steps", "must end at 100"),
        ({"service": "orders", "tag": "v2", "steps": []}, "spec.steps", "non-empty list"),
        ({"service": "orders", "tag": "v2", "steps": ["5"]}, "spec.steps[0]", "from 1 to 100"),
        ({"service": "orders", "tag": "v2", "interval": 0}, "spec.interval", "above 0"),
        ({"service": "orders", "tag": "v2", "interval": "0s"}, "spec.interval", "above 0"),
        ({"service": "orders", "tag": "v2", "interval": "soon"}, "spec.interval", "duration"),
        ({"service": "orders", "tag": "v2", "drainOld": "yes"}, "spec.drainOld", "true or false"),
        ({"service": "orders", "tag": "v2", "stickyKey": {"body": "x"}}, "spec.stickyKey.body", "unknown field"),
        ({"service": "orders", "tag": "v2", "steps": [100], "weight": 5}, "spec.weight", "unknown field"),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "cpu", "max": 1}]}},
            "spec.analysis.metrics[0].name",
            "must be one of errorRate, p99Latency",
        ),
        ({"service": "orders", "tag": "v2", "analysis": {"metrics": []}}, "spec.analysis.metrics", "non-empty list"),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate"}]}},
            "spec.analysis.metrics[0].max",
            "set a bound",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate", "max": 2}]}},
            "spec.analysis.metrics[0].max",
            "between 0 and 1",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate", "maxRatioToBase": 2}]}},
            "spec.analysis.metrics[0].maxRatioToBase",
            "is for p99Latency",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "p99Latency", "significance": 0.1}]}},
            "spec.analysis.metrics[0].significance",
            "is for errorRate",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "p99Latency", "maxRatioToBase": 0.5}]}},
            "spec.analysis.metrics[0].maxRatioToBase",
            ">= 1",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "p99Latency", "max": "fast"}]}},
            "spec.analysis.metrics[0].max",
            "duration",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate", "significance": 0}]}},
            "spec.analysis.metrics[0].significance",
            "above 0",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate", "max": 0.01, "resource": "/orders"}]}},
            "spec.analysis.metrics[0].resource",
            "GET /orders",
        ),
        (
            {"service": "orders", "tag": "v2", "analysis": {"metrics": [{"name": "errorRate", "max": 0.01, "resource": "a\x1bb"}]}},
            "spec.analysis.metrics[0].resource",
            "resource name",
        ),
        ({"service": "orders", "tag": "v2", "analysis": {"minRequests": 0}}, "spec.analysis.minRequests", ">= 1"),
        ({"service": "orders", "tag": "v2", "analysis": {"failureLimit": -1}}, "spec.analysis.failureLimit", ">= 0"),
        ({"service": "orders", "tag": "v2", "analysis": {"latencyTest": {"alpha": 0.9}}}, "spec.analysis.latencyTest.alpha", "at most 0.5"),
        ({"service": "orders", "tag": "v2", "analysis": {"judge": "kayenta"}}, "spec.analysis.judge", "unknown field"),
    ],
)
def test_refusals_name_the_field(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate(rollout(spec))
    assert caught.value.document == "Rollout/orders-v2"
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_api_version_is_tidegates() -> None:
    document = rollout({"service": "orders", "tag": "v2"})
    document["apiVersion"] = "traffic.opensergo.io/v1alpha1"
    with pytest.raises(RuleError) as caught:
        validate(document)
    assert caught.value.field == "apiVersion"
