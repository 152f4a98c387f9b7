"""`Rollout` documents -> the core's rollout plan (tidegate.core.rollout.machine.Plan).

A tidegate kind: a new version (the instances of `service` carrying `tag`) takes
the canary share of each step, is judged against base over each interval, and
is promoted at 100% or aborted to 0 (README, "Rollouts"). The control plane runs
it (`POST /v1/rollouts`, or `tidegate rollout start`); a document lets the plan
live in Git.

```yaml
apiVersion: tidegate.io/v1alpha1
kind: Rollout
metadata: {name: orders-v2}
spec:
  service: orders
  tag: v2
  steps: [5, 10, 25, 50, 100]      # canary percent; increasing, in 1..100, ending at 100
  interval: 60s                    # each step's window; the duration units other rules take
  stickyKey: {header: x-user-id}   # optional: the CanaryRule's sticky key
  drainOld: true                   # default: drain the old instances once promoted (false: leave them)
  analysis:                        # optional; without it, the default gates below
    minRequests: 50                # per side and window; fewer is inconclusive
    failureLimit: 0                # failed windows tolerated (Argo Rollouts' failureLimit)
    consecutiveFailureLimit: 2     # optional: failed windows in a row tolerated
    inconclusiveLimit: 5           # inconclusive windows in a row before pausing
    metrics:
      - name: errorRate            # gray's error rate
        max: 1%                    # absolute: success >= 99%
        significance: 0.05         # relative: fail when significantly above base's (one-sided)
      - name: p99Latency
        resource: GET /orders/{id} # optional: one resource; default the service's inbound rollup
        max: 500ms                 # absolute
        maxRatioToBase: 1.2        # relative: gray p99 <= 1.2 x base p99
    latencyTest: {alpha: 0.01, minShift: 20ms}   # optional: Mann-Whitney U + Hodges-Lehmann
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core import names
from tidegate.core.coloring import RequestKey
from tidegate.core.rollout.judge import ALL, DEFAULT_GATES, Analysis, Gate, LatencyTest, Metric
from tidegate.core.rollout.machine import DEFAULT_INTERVAL_S, DEFAULT_STEPS, Plan
from tidegate.rules.document import check_api_version, register_kind
from tidegate.rules.lanes import parse_sticky_key
from tidegate.rules.quantities import SpecFields
from tidegate.rules.resources import ResourceNameError, resource_name

API_VERSION = "tidegate.io/v1alpha1"
KIND = "Rollout"
#: Steps a rollout may have at most.
MAX_STEPS = 100
#: Gates (metrics) one analysis may name at most.
MAX_METRICS = 20

_METRICS = tuple(str(metric) for metric in Metric)


@dataclass(frozen=True, slots=True)
class RolloutDocument:
    """A parsed `Rollout` document: its name, the plan, and the canary's sticky key."""

    name: str
    plan: Plan
    sticky_key: RequestKey | None = None


def parse(document: Mapping[str, Any]) -> RolloutDocument:
    label = check_api_version(document, API_VERSION)
    fields = SpecFields(
        label, document.get("spec") or {}, "spec", ("service", "tag", "steps", "interval", "stickyKey", "drainOld", "analysis")
    )
    fields.required("service")
    service = fields.text("service")
    if not names.is_service_name(service):
        raise fields.error("service", f"must be a service name: {names.SERVICE_NAME_RULE}")
    fields.required("tag")
    tag = fields.text("tag")
    if not tag or not names.is_tag(tag):
        raise fields.error("tag", f"must be the new version's tag, not empty: {names.TAG_RULE}")
    steps = _steps(fields)
    interval = fields.seconds("interval", DEFAULT_INTERVAL_S)
    if interval <= 0:
        raise fields.error("interval", 'must be above 0 (a duration such as "60s")')
    sticky = parse_sticky_key(fields.spec["stickyKey"], label, fields.path("stickyKey")) if fields.has("stickyKey") else None
    drain_old = fields.spec.get("drainOld", True)
    if not isinstance(drain_old, bool):
        raise fields.error("drainOld", "must be true or false")
    analysis_fields = fields.mapping("analysis", ANALYSIS_FIELDS)
    analysis = parse_analysis(analysis_fields) if analysis_fields is not None else Analysis()
    plan = Plan(service=service, tag=tag, steps=steps, interval_s=interval, analysis=analysis, drain_old=drain_old)
    return RolloutDocument(str(document["metadata"]["name"]), plan, sticky)


ANALYSIS_FIELDS = ("minRequests", "failureLimit", "consecutiveFailureLimit", "inconclusiveLimit", "metrics", "latencyTest")


def parse_analysis(fields: SpecFields) -> Analysis:
    """An `analysis` mapping (a document's `spec.analysis`, or the file `tidegate rollout start --analysis` reads)."""
    gates: tuple[Gate, ...] = DEFAULT_GATES
    if fields.has("metrics"):
        raw = fields.spec["metrics"]
        if not isinstance(raw, list) or not raw:
            raise fields.error("metrics", f"must be a non-empty list of metrics ({', '.join(_METRICS)})")
        if len(raw) > MAX_METRICS:
            raise fields.error("metrics", f"must have at most {MAX_METRICS} metrics, got {len(raw)}")
        gates = tuple(_gate(SpecFields(fields.document, item, fields.path(f"metrics[{i}]"), _GATE_FIELDS)) for i, item in enumerate(raw))
    latency_test = None
    test = fields.mapping("latencyTest", ("resource", "alpha", "minShift"))
    if test is not None:
        latency_test = LatencyTest(
            resource=_resource(test),
            alpha=_alpha(test, "alpha", 0.01),
            min_shift_ms=test.seconds("minShift", 0.0) * 1000.0,
        )
    consecutive = fields.whole("consecutiveFailureLimit") if fields.has("consecutiveFailureLimit") else None
    return Analysis(
        gates=gates,
        latency_test=latency_test,
        min_requests=fields.whole("minRequests", 50, minimum=1),
        failure_limit=fields.whole("failureLimit", 0),
        consecutive_failure_limit=consecutive,
        inconclusive_limit=fields.whole("inconclusiveLimit", 5),
    )


_GATE_FIELDS = ("name", "resource", "max", "significance", "maxRatioToBase")


def _gate(fields: SpecFields) -> Gate:
    metric = Metric(fields.choice("name", _METRICS))
    resource = _resource(fields)
    if metric is Metric.ERROR_RATE:
        if fields.has("maxRatioToBase"):
            raise fields.error("maxRatioToBase", "is for p99Latency; errorRate compares with base by `significance`")
        maximum = fields.ratio("max") if fields.has("max") else None
        relative = _alpha(fields, "significance") if fields.has("significance") else None
    else:
        if fields.has("significance"):
            raise fields.error("significance", "is for errorRate; p99Latency compares with base by `maxRatioToBase`")
        maximum = fields.seconds("max") * 1000.0 if fields.has("max") else None
        relative = fields.number("maxRatioToBase", minimum=1.0) if fields.has("maxRatioToBase") else None
    if maximum is None and relative is None:
        other = "significance" if metric is Metric.ERROR_RATE else "maxRatioToBase"
        raise fields.error("max", f"set a bound: max (absolute) or {other} (relative to base), or both")
    return Gate(metric, resource, maximum, relative)


def _alpha(fields: SpecFields, key: str, default: float | None = None) -> float:
    alpha = fields.number(key, default, maximum=0.5)
    if alpha <= 0:
        raise fields.error(key, f"must be a significance level above 0 (such as 0.05), got {alpha:g}")
    return alpha


def _resource(fields: SpecFields) -> str:
    if not fields.has("resource"):
        return ALL
    text = fields.text("resource")
    if not text or len(text) > 1024 or names.has_control_characters(text):
        raise fields.error("resource", "must be a resource name (such as 'GET /orders/{id}') of at most 1024 characters")
    if text == ALL:
        return ALL
    try:
        return resource_name(text)
    except ResourceNameError as bad:
        raise fields.error("resource", str(bad)) from None


def _steps(fields: SpecFields) -> tuple[float, ...]:
    if not fields.has("steps"):
        return tuple(float(step) for step in DEFAULT_STEPS)
    raw = fields.spec["steps"]
    if not isinstance(raw, list) or not raw:
        raise fields.error("steps", "must be a non-empty list of percents, such as [5, 10, 25, 50, 100]")
    if len(raw) > MAX_STEPS:
        raise fields.error("steps", f"must have at most {MAX_STEPS} steps, got {len(raw)}")
    steps: list[float] = []
    for i, step in enumerate(raw):
        where = f"steps[{i}]"
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 1 <= step <= 100:
            raise fields.error(where, f"must be a percent from 1 to 100, got {step!r}")
        if steps and step <= steps[-1]:
            raise fields.error(where, f"must be above the step before it ({steps[-1]:g}): steps increase, got {step!r}")
        steps.append(float(step))
    if steps[-1] != 100:
        raise fields.error("steps", f"must end at 100 (the promotion), got {steps[-1]:g}")
    return tuple(steps)


register_kind(KIND, parse)
