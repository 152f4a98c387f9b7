"""OpenSergo fault-tolerance documents (`fault-tolerance.opensergo.io/v1alpha1`) -> core flow and breaker rules.

A `FaultToleranceRule` applies strategies to target resources. Strategies are
their own documents, referenced by name (`{name: ..., kind: ...}`, kind
optional when the name is unique in the namespace), or written inline for
single-document use (`{kind: ..., spec: {...}}`). `compile_rules` in
`tidegate.rules.stability` resolves the references over all documents; a
reference to a missing strategy refuses the whole set, naming it.

```yaml
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: RateLimitStrategy
metadata: {name: rate-limit-foo}
spec:
  metricType: RequestAmount     # the only metric
  limitMode: Local              # the only mode (no cluster limits)
  threshold: 10                 # calls per statDurationSeconds
  statDurationSeconds: 1        # or statDuration: "1s"; 1..60 s, or minutes
  # tidegate extensions:
  warmUpPeriod: 10s             # warm-up (Sentinel's cold start), 0 = off
  coldFactor: 3                 # rate starts at threshold / coldFactor
  origin: default               # limitApp: default | other | a caller's name
  relateTo: "POST /orders"      # limit by that resource's traffic (relate), or
  entrance: "GET /checkout"     # only calls entering through it (chain)
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: ThrottlingStrategy
metadata: {name: throttling-foo}
spec:
  minIntervalOfRequests: 20ms   # pace: 50 calls per second
  queueTimeout: 500ms           # a caller waits at most this long, else refused
  # extensions: warmUpPeriod, coldFactor, origin, relateTo, entrance
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: ConcurrencyLimitStrategy
metadata: {name: concurrency-limit-foo}
spec:
  maxConcurrency: 8
  limitMode: Local
  # extensions: origin, relateTo, entrance
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: CircuitBreakerStrategy
metadata: {name: circuit-breaker-slow-foo}
spec:
  strategy: SlowRequestRatio    # | ErrorRequestRatio | ErrorRequestCount (extension)
  triggerRatio: "60%"           # ratio strategies
  # triggerCount: 5             # ErrorRequestCount: errors in statDuration
  statDuration: 30s
  recoveryTimeout: 5s           # OPEN this long, then one probe call
  minRequestAmount: 5
  slowConditions:
    maxAllowedRt: 500ms
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: FaultToleranceRule
metadata: {name: my-rule}
spec:
  selector: {app: orders}       # optional: only the service "orders" applies it
  targets:
    - targetResourceName: "GET /orders/{id}"
  strategies:
    - name: rate-limit-foo
    - kind: ConcurrencyLimitStrategy   # inline
      spec: {maxConcurrency: 8}
```

What counts as an error for a breaker is decided by the edge (an exception,
or a 5xx response), so `errorConditions` must be empty; `fallbackAction` is
refused (a refused call gets 429, or 503 from a breaker or adaptive protection).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.errors import RuleError
from tidegate.rules.document import check_api_version, register_kind, scoped_app
from tidegate.rules.quantities import SpecFields
from tidegate.rules.resources import ResourceNameError, resource_name, target_warnings

API_VERSION = "fault-tolerance.opensergo.io/v1alpha1"
RULE_KIND = "FaultToleranceRule"
RATE_LIMIT = "RateLimitStrategy"
THROTTLING = "ThrottlingStrategy"
CONCURRENCY = "ConcurrencyLimitStrategy"
CIRCUIT_BREAKER = "CircuitBreakerStrategy"
STRATEGY_KINDS = (RATE_LIMIT, THROTTLING, CONCURRENCY, CIRCUIT_BREAKER)

_FLOW_EXTRAS = ("origin", "relateTo", "entrance")
_WARM_UP = ("warmUpPeriod", "coldFactor")
_BREAKER_STRATEGIES = {"SlowRequestRatio": "slow_ratio", "ErrorRequestRatio": "error_ratio", "ErrorRequestCount": "error_count"}


@dataclass(frozen=True, slots=True)
class Strategy:
    """A parsed strategy: the core rule it makes for a resource, minus the resource."""

    kind: str
    name: str
    document: str  # where errors point: the strategy document, or the rule holding it inline
    prefix: str  # the path of its spec inside that document
    params: tuple[tuple[str, Any], ...]
    fields: tuple[tuple[str, str], ...]  # core field -> document field, for errors
    warnings: tuple[str, ...] = ()  # why a name it refers to can never match

    def build(self, resource: str, name: str, target_document: str, target_field: str) -> FlowRule | BreakerRule:
        """The core rule for `resource`; RuleError points at the document field that made it invalid."""
        params = dict(self.params)
        rule: FlowRule | BreakerRule = (
            BreakerRule(resource, name=name, **params) if self.kind == CIRCUIT_BREAKER else FlowRule(resource, name=name, **params)
        )
        try:
            rule.validate()
        except RuleError as bad:
            if bad.field == "resource":
                raise RuleError(bad.reason, document=target_document, field=target_field) from None
            field = dict(self.fields).get(bad.field, "kind")
            raise RuleError(bad.reason, document=self.document, field=f"{self.prefix}.{field}") from None
        return rule


@dataclass(frozen=True, slots=True)
class StrategyRef:
    """A strategy named by a FaultToleranceRule, resolved against the other documents."""

    name: str
    kind: str
    field: str


@dataclass(frozen=True, slots=True)
class FaultToleranceRule:
    """A parsed FaultToleranceRule: targets x strategies (inline ones parsed, others to resolve)."""

    namespace: str
    name: str
    document: str
    app: str
    targets: tuple[str, ...]
    strategies: tuple[Strategy | StrategyRef, ...]
    warnings: tuple[str, ...] = ()  # targets that can never match anything tidegate governs


def resource_field(fields: SpecFields, key: str) -> str:
    """A resource name field: Sentinel's `GET:/foo` read as `GET /foo`; a bare path refused, saying what would match."""
    try:
        return resource_name(fields.text(key))
    except ResourceNameError as bad:
        raise fields.error(key, str(bad)) from None


def _flow_extras(fields: SpecFields, params: dict[str, Any], names: dict[str, str]) -> None:
    params["origin"] = fields.text("origin", "default") or "default"
    if fields.has("relateTo") and fields.has("entrance"):
        raise fields.error("entrance", "give relateTo or entrance, not both")
    if fields.has("relateTo"):
        params["strategy"], params["ref_resource"] = "relate", resource_field(fields, "relateTo")
        names["ref_resource"] = "relateTo"
    elif fields.has("entrance"):
        params["strategy"], params["ref_resource"] = "chain", resource_field(fields, "entrance")
        names["ref_resource"] = "entrance"
    names["origin"] = "origin"


def _warm_up(fields: SpecFields, params: dict[str, Any], names: dict[str, str]) -> None:
    period = fields.seconds("warmUpPeriod", 0)
    if period and not period.is_integer():
        raise fields.error("warmUpPeriod", f"must be whole seconds, got {period:g}s")
    params["warmup_s"] = int(period)
    params["cold_factor"] = fields.whole("coldFactor", 3, minimum=2)
    names.update(warmup_s="warmUpPeriod", cold_factor="coldFactor")


def _local_only(fields: SpecFields) -> None:
    fields.choice("limitMode", ("Local",), "Local")


def parse_strategy(kind: str, name: str, document: str, spec: Any, prefix: str) -> Strategy:
    """Parse a strategy's spec (a whole document's, or one written inline)."""
    params: dict[str, Any] = {}
    names: dict[str, str] = {}
    if kind == RATE_LIMIT:
        fields = SpecFields(
            document,
            spec,
            prefix,
            ("metricType", "limitMode", "threshold", "statDurationSeconds", "statDuration", *_WARM_UP, *_FLOW_EXTRAS),
        )
        fields.choice("metricType", ("RequestAmount",), "RequestAmount")
        _local_only(fields)
        params["threshold"] = fields.number("threshold")
        if fields.has("statDurationSeconds") and fields.has("statDuration"):
            raise fields.error("statDuration", "give statDurationSeconds or statDuration, not both")
        duration_key = "statDuration" if fields.has("statDuration") else "statDurationSeconds"
        duration = fields.seconds(duration_key, 1)
        if not duration.is_integer():
            raise fields.error(duration_key, f"must be whole seconds, got {duration:g}s")
        params["stat_duration_s"] = int(duration)
        names.update(threshold="threshold", stat_duration_s=duration_key)
        _warm_up(fields, params, names)
        _flow_extras(fields, params, names)
    elif kind == THROTTLING:
        fields = SpecFields(document, spec, prefix, ("minIntervalOfRequests", "queueTimeout", *_WARM_UP, *_FLOW_EXTRAS))
        interval = fields.seconds("minIntervalOfRequests", None)
        if interval <= 0:
            raise fields.error("minIntervalOfRequests", "must be a duration > 0")
        params.update(threshold=1.0 / interval, behavior="throttle", max_queue_s=fields.seconds("queueTimeout", 0))
        names.update(threshold="minIntervalOfRequests", max_queue_s="queueTimeout")
        _warm_up(fields, params, names)
        _flow_extras(fields, params, names)
    elif kind == CONCURRENCY:
        fields = SpecFields(document, spec, prefix, ("maxConcurrency", "limitMode", *_FLOW_EXTRAS))
        _local_only(fields)
        params.update(threshold=float(fields.whole("maxConcurrency")), grade="concurrency")
        names["threshold"] = "maxConcurrency"
        _flow_extras(fields, params, names)
    elif kind == CIRCUIT_BREAKER:
        fields = SpecFields(
            document,
            spec,
            prefix,
            (
                "strategy",
                "triggerRatio",
                "triggerCount",
                "statDuration",
                "recoveryTimeout",
                "minRequestAmount",
                "slowConditions",
                "errorConditions",
            ),
        )
        strategy = _BREAKER_STRATEGIES[fields.choice("strategy", tuple(_BREAKER_STRATEGIES))]
        params["strategy"] = strategy
        if strategy == "error_count":
            params["threshold"] = float(fields.whole("triggerCount", minimum=1))
            names["threshold"] = "triggerCount"
        else:
            params["threshold"] = fields.ratio("triggerRatio")
            names["threshold"] = "triggerRatio"
        params["stat_interval_ms"] = round(fields.seconds("statDuration", 1) * 1000)
        params["retry_timeout_ms"] = round(fields.seconds("recoveryTimeout") * 1000)
        params["min_request_amount"] = fields.whole("minRequestAmount", 5)
        slow = fields.mapping("slowConditions", ("maxAllowedRt",))
        if strategy == "slow_ratio":
            if slow is None:
                raise fields.error("slowConditions", "is required for SlowRequestRatio (slowConditions.maxAllowedRt)")
            params["max_allowed_rt_ms"] = slow.seconds("maxAllowedRt") * 1000.0
        elif slow is not None:
            raise fields.error("slowConditions", "applies only to the SlowRequestRatio strategy")
        if fields.spec.get("errorConditions"):
            raise fields.error("errorConditions", "is not supported: an error is an exception or a 5xx response, as the edge reports it")
        names.update(
            stat_interval_ms="statDuration",
            retry_timeout_ms="recoveryTimeout",
            min_request_amount="minRequestAmount",
            max_allowed_rt_ms="slowConditions.maxAllowedRt",
        )
    else:
        raise RuleError(f"unknown strategy kind {kind!r} (known: {', '.join(STRATEGY_KINDS)})", document=document, field="kind")
    warnings = tuple(f"{document} field '{prefix}.{names['ref_resource']}': {w}" for w in target_warnings(params.get("ref_resource", "")))
    strategy_rule = Strategy(kind, name, document, prefix, tuple(params.items()), tuple(names.items()), warnings)
    strategy_rule.build("-", name or "-", document, prefix)  # every value checked now, not only when a rule uses it
    return strategy_rule


def parse_strategy_document(document: Mapping[str, Any]) -> Strategy:
    label = check_api_version(document, API_VERSION)
    name = str(document["metadata"]["name"])
    return parse_strategy(str(document["kind"]), name, label, document.get("spec") or {}, "spec")


def parse_rule_document(document: Mapping[str, Any]) -> FaultToleranceRule:
    """Parse a FaultToleranceRule; inline strategies are checked fully, references are resolved later."""
    label = check_api_version(document, API_VERSION)
    metadata = document["metadata"]
    fields = SpecFields(label, document.get("spec") or {}, "spec", ("selector", "targets", "strategies", "fallbackAction"))
    if fields.has("fallbackAction"):
        raise fields.error("fallbackAction", "is not supported: a refused call gets 429, or 503 from a breaker or adaptive protection")
    app = scoped_app(document, label, fields.selector_app())
    targets_raw = fields.required("targets")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise fields.error("targets", "must be a non-empty list of {targetResourceName: ...}")
    targets: list[str] = []
    warnings: list[str] = []
    for i, item in enumerate(targets_raw):
        target = SpecFields(label, item, f"spec.targets[{i}]", ("targetResourceName",))
        if not target.text("targetResourceName"):
            raise target.error("targetResourceName", "is required: the resource to protect")
        name = resource_field(target, "targetResourceName")
        warnings.extend(f"{label} field 'spec.targets[{i}].targetResourceName': {w}" for w in target_warnings(name))
        targets.append(name)
    strategies_raw = fields.required("strategies")
    if not isinstance(strategies_raw, list) or not strategies_raw:
        raise fields.error("strategies", "must be a non-empty list of {name: ...} or {kind: ..., spec: ...}")
    strategies: list[Strategy | StrategyRef] = []
    for i, item in enumerate(strategies_raw):
        entry = SpecFields(label, item, f"spec.strategies[{i}]", ("name", "kind", "spec"))
        kind = entry.text("kind") if entry.has("kind") else ""
        if kind and kind not in STRATEGY_KINDS:
            raise entry.error("kind", f"must be one of {', '.join(STRATEGY_KINDS)}, got {kind!r}")
        if entry.has("spec"):
            if not kind:
                raise entry.error("kind", "is required for an inline strategy")
            inline_name = entry.text("name") if entry.has("name") else f"{kind}[{i}]"
            strategies.append(parse_strategy(kind, inline_name, label, entry.spec["spec"], f"spec.strategies[{i}].spec"))
        else:
            ref = entry.text("name")
            if not ref:
                raise entry.error("name", "is required: the name of a strategy document (or give kind and spec inline)")
            strategies.append(StrategyRef(ref, kind, f"spec.strategies[{i}].name"))
    return FaultToleranceRule(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata["name"]),
        document=label,
        app=app,
        targets=tuple(targets),
        strategies=tuple(strategies),
        warnings=(*warnings, *(w for item in strategies if isinstance(item, Strategy) for w in item.warnings)),
    )


register_kind(RULE_KIND, parse_rule_document)
for _kind in STRATEGY_KINDS:
    register_kind(_kind, parse_strategy_document)
