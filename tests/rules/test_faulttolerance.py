"""OpenSergo fault-tolerance documents and tidegate's stability kinds -> a typed RuleSet."""

from __future__ import annotations

import pytest

from tidegate.core.adaptive import AdaptiveRule
from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import Governor
from tidegate.core.hotspot import HotspotRule
from tidegate.errors import RuleError
from tidegate.rules import load_documents, validate
from tidegate.rules.stability import compile_rules

STRATEGIES = """
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: RateLimitStrategy
metadata: {name: rate-limit-foo}
spec: {metricType: RequestAmount, limitMode: Local, threshold: 10, statDurationSeconds: 1}
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: ThrottlingStrategy
metadata: {name: throttling-foo}
spec: {minIntervalOfRequests: 20ms, queueTimeout: 500ms, origin: app-a}
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: CircuitBreakerStrategy
metadata: {name: circuit-breaker-slow-foo}
spec:
  strategy: SlowRequestRatio
  triggerRatio: '60%'
  statDuration: '30s'
  recoveryTimeout: '5s'
  minRequestAmount: 5
  slowConditions: {maxAllowedRt: '500ms'}
"""

RULE = """
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: FaultToleranceRule
metadata: {name: my-rule}
spec:
  targets:
    - targetResourceName: 'GET /foo'
    - targetResourceName: 'GET /bar'
  strategies:
    - name: rate-limit-foo
    - name: circuit-breaker-slow-foo
    - {name: throttling-foo, kind: ThrottlingStrategy}
"""


def test_rule_with_referenced_strategies_compiles_per_target() -> None:
    rules = compile_rules(load_documents(STRATEGIES + "---" + RULE))
    assert rules.flow == (
        FlowRule("GET /foo", 10.0, name="my-rule/rate-limit-foo", origin="default"),
        FlowRule("GET /bar", 10.0, name="my-rule/rate-limit-foo", origin="default"),
        FlowRule("GET /foo", 50.0, name="my-rule/throttling-foo", behavior="throttle", max_queue_s=0.5, origin="app-a"),
        FlowRule("GET /bar", 50.0, name="my-rule/throttling-foo", behavior="throttle", max_queue_s=0.5, origin="app-a"),
    )
    slow = BreakerRule(
        "GET /foo",
        "slow_ratio",
        0.6,
        name="my-rule/circuit-breaker-slow-foo",
        max_allowed_rt_ms=500.0,
        min_request_amount=5,
        stat_interval_ms=30_000,
        retry_timeout_ms=5000,
    )
    assert rules.breakers[0] == slow
    gov = Governor()
    gov.load(rules)
    assert len(gov.rules.flow) == 4


def test_inline_strategies_and_extensions() -> None:
    (document,) = load_documents("""
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: FaultToleranceRule
metadata: {name: inline}
spec:
  targets: [{targetResourceName: 'db'}]
  strategies:
    - kind: RateLimitStrategy
      spec: {threshold: 100, warmUpPeriod: 10s, coldFactor: 4, entrance: 'GET /orders'}
    - kind: ConcurrencyLimitStrategy
      spec: {maxConcurrency: 8, relateTo: 'db-write'}
    - kind: CircuitBreakerStrategy
      spec: {strategy: ErrorRequestCount, triggerCount: 3, recoveryTimeout: 2s, statDuration: 500ms}
""")
    rules = compile_rules([document])
    assert rules.flow == (
        FlowRule("db", 100.0, name="inline/RateLimitStrategy[0]", warmup_s=10, cold_factor=4, strategy="chain", ref_resource="GET /orders"),
        FlowRule("db", 8.0, name="inline/ConcurrencyLimitStrategy[1]", grade="concurrency", strategy="relate", ref_resource="db-write"),
    )
    assert rules.breakers == (
        BreakerRule("db", "error_count", 3.0, name="inline/CircuitBreakerStrategy[2]", retry_timeout_ms=2000, stat_interval_ms=500),
    )


def test_adaptive_and_hotspot_kinds_with_selectors() -> None:
    documents = load_documents("""
apiVersion: tidegate.io/v1alpha1
kind: AdaptiveProtection
metadata: {name: protect}
spec: {maxLoopLag: 50ms, maxCpuUsage: '80%', maxConcurrency: 200}
---
apiVersion: tidegate.io/v1alpha1
kind: HotspotRule
metadata: {name: hot-items}
spec:
  selector: {app: shop}
  resource: 'GET /items/{id}'
  parameter: {source: header, name: X-User}
  threshold: 20
  burst: 5
  exceptions: [{value: vip, threshold: 200}, {value: 42, threshold: 0}]
""")
    rules = compile_rules(documents, service="shop")
    assert rules.adaptive == (AdaptiveRule("protect", 0.05, 0.8, 200),)
    assert rules.hotspot == (
        HotspotRule("GET /items/{id}", "header:x-user", 20, name="hot-items", burst=5, exceptions=(("vip", 200), ("42", 0))),
    )
    assert compile_rules(documents, service="cart").hotspot == ()


@pytest.mark.parametrize(
    ("text", "document", "field", "words"),
    [
        ("kind: RateLimitStrategy\nspec: {threshold: -1}", "RateLimitStrategy/x", "spec.threshold", ">= 0"),
        ("kind: RateLimitStrategy\nspec: {threshold: 5, limitMode: Global}", "RateLimitStrategy/x", "spec.limitMode", "Local"),
        ("kind: RateLimitStrategy\nspec: {threshold: 5, treshold: 6}", "RateLimitStrategy/x", "spec.treshold", "unknown field"),
        ("kind: RateLimitStrategy\nspec: {threshold: 1, warmUpPeriod: 1s}", "RateLimitStrategy/x", "spec.warmUpPeriod", "too short"),
        ("kind: ThrottlingStrategy\nspec: {minIntervalOfRequests: fast}", "ThrottlingStrategy/x", "spec.minIntervalOfRequests", "duration"),
        ("kind: ConcurrencyLimitStrategy\nspec: {maxConcurrency: 2.5}", "ConcurrencyLimitStrategy/x", "spec.maxConcurrency", "whole"),
        (
            "kind: CircuitBreakerStrategy\nspec: {strategy: SlowRequestRatio, triggerRatio: '150%', recoveryTimeout: 1s, slowConditions: {maxAllowedRt: 1s}}",
            "CircuitBreakerStrategy/x",
            "spec.triggerRatio",
            "between 0 and 1",
        ),
        (
            "kind: CircuitBreakerStrategy\nspec: {strategy: SlowRequestRatio, triggerRatio: 0.5, recoveryTimeout: 1s}",
            "CircuitBreakerStrategy/x",
            "spec.slowConditions",
            "maxAllowedRt",
        ),
        (
            "kind: CircuitBreakerStrategy\nspec: {strategy: ErrorRequestRatio, triggerRatio: 0.5}",
            "CircuitBreakerStrategy/x",
            "spec.recoveryTimeout",
            "required",
        ),
        (
            "kind: FaultToleranceRule\nspec: {targets: [{targetResourceName: a}], strategies: [{kind: RateLimitStrategy, spec: {threshold: x}}]}",
            "FaultToleranceRule/x",
            "spec.strategies[0].spec.threshold",
            "number",
        ),
        ("kind: FaultToleranceRule\nspec: {targets: [], strategies: [{name: s}]}", "FaultToleranceRule/x", "spec.targets", "non-empty"),
        (
            "kind: FaultToleranceRule\nspec: {targets: [{targetResourceName: a}], strategies: [{name: s}], fallbackAction: f}",
            "FaultToleranceRule/x",
            "spec.fallbackAction",
            "not supported",
        ),
    ],
)
def test_single_document_errors_name_document_and_field(text: str, document: str, field: str, words: str) -> None:
    (doc,) = load_documents("apiVersion: fault-tolerance.opensergo.io/v1alpha1\nmetadata: {name: x}\n" + text)
    with pytest.raises(RuleError) as bad:
        validate(doc)
    assert (bad.value.document, bad.value.field) == (document, field)
    assert words in bad.value.reason


def test_tidegate_kind_errors() -> None:
    (doc,) = load_documents("apiVersion: tidegate.io/v1alpha1\nkind: AdaptiveProtection\nmetadata: {name: a}\nspec: {}")
    with pytest.raises(RuleError) as bad:
        validate(doc)
    assert bad.value.field == "spec.maxLoopLag"
    (doc,) = load_documents(
        "apiVersion: tidegate.io/v1alpha1\nkind: HotspotRule\nmetadata: {name: h}\nspec: {resource: r, parameter: {source: cookie, name: c}, threshold: 1}"
    )
    with pytest.raises(RuleError) as bad:
        validate(doc)
    assert bad.value.field == "spec.parameter.source"


def test_missing_strategy_refuses_the_whole_set_naming_it() -> None:
    documents = load_documents(STRATEGIES + "---" + RULE.replace("rate-limit-foo", "rate-limit-typo"))
    with pytest.raises(RuleError) as bad:
        compile_rules(documents)
    assert bad.value.document == "FaultToleranceRule/my-rule"
    assert bad.value.field == "spec.strategies[0].name"
    assert "rate-limit-typo" in bad.value.reason


def test_strategy_in_another_namespace_is_not_found() -> None:
    documents = load_documents(STRATEGIES + "---" + RULE.replace("metadata: {name: my-rule}", "metadata: {name: my-rule, namespace: prod}"))
    with pytest.raises(RuleError) as bad:
        compile_rules(documents)
    assert "namespace 'prod'" in bad.value.reason


def test_other_kinds_are_ignored() -> None:
    (doc,) = load_documents("apiVersion: tidegate.io/v1alpha1\nkind: ServiceSettings\nmetadata: {name: s}\nspec: {service: s}")
    assert compile_rules([doc]).flow == ()
