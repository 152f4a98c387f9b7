"""OpenSergo scopes a rule to an app by `metadata.labels.app`; tidegate honours it as `spec.selector.app`."""

from __future__ import annotations

import pytest

from tidegate.core.coloring import RequestView
from tidegate.errors import RuleError
from tidegate.rules import validate
from tidegate.rules.lanes import compile_coloring
from tidegate.rules.stability import compile_rules

FT = "fault-tolerance.opensergo.io/v1alpha1"
LABELLED = {"name": "only-orders", "labels": {"app": "orders"}}

STRATEGY = {"apiVersion": FT, "kind": "ConcurrencyLimitStrategy", "metadata": {"name": "c8"}, "spec": {"maxConcurrency": 8}}
RULE = {
    "apiVersion": FT,
    "kind": "FaultToleranceRule",
    "metadata": LABELLED,
    "spec": {"targets": [{"targetResourceName": "GET /x"}], "strategies": [{"name": "c8"}]},
}
ADAPTIVE = {"apiVersion": "tidegate.io/v1alpha1", "kind": "AdaptiveProtection", "metadata": LABELLED, "spec": {"maxConcurrency": 10}}
HOTSPOT = {
    "apiVersion": "tidegate.io/v1alpha1",
    "kind": "HotspotRule",
    "metadata": LABELLED,
    "spec": {"resource": "GET /x", "parameter": {"source": "query", "name": "id"}, "threshold": 5},
}
LANE = {
    "apiVersion": "traffic.opensergo.io/v1alpha1",
    "kind": "TrafficLane",
    "metadata": LABELLED,
    "spec": {"lane": {"name": "gray"}, "rules": [{"http": {"headers": {"x-lane": "gray"}}}]},
}


@pytest.mark.parametrize(("documents", "count"), [([STRATEGY, RULE], "flow"), ([ADAPTIVE], "adaptive"), ([HOTSPOT], "hotspot")])
def test_a_stability_rule_labelled_for_one_app_applies_only_there(documents: list, count: str) -> None:
    assert len(getattr(compile_rules(documents, "orders"), count)) == 1
    assert len(getattr(compile_rules(documents, "frontend"), count)) == 0


def test_a_traffic_lane_labelled_for_one_app_colors_only_there() -> None:
    coloring, problems = compile_coloring([LANE])
    assert problems == []
    view = RequestView("GET", "/", {"x-lane": "gray"})
    assert coloring.lane_for(view, lambda: 0.0, service="orders") == "gray"
    assert coloring.lane_for(view, lambda: 0.0, service="frontend") == ""


@pytest.mark.parametrize("document", [RULE, ADAPTIVE, HOTSPOT, LANE])
def test_a_label_and_a_selector_naming_different_apps_are_refused(document: dict) -> None:
    spec = {**document["spec"], "selector": {"app": "billing"}}
    with pytest.raises(RuleError) as refused:
        validate({**document, "spec": spec})
    assert refused.value.field == "metadata.labels.app" and "billing" in str(refused.value)
    validate({**document, "spec": {**document["spec"], "selector": {"app": "orders"}}})  # the same app twice is fine


def test_a_label_that_is_not_a_name_is_refused() -> None:
    with pytest.raises(RuleError) as refused:
        validate({**ADAPTIVE, "metadata": {"name": "a", "labels": {"app": 3}}})
    assert refused.value.field == "metadata.labels.app"
