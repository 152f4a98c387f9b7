"""`compile_rules`: every stability document in force -> one typed `RuleSet` for the Governor.

Reads FaultToleranceRule and its strategy kinds (`tidegate.rules.faulttolerance`),
AdaptiveProtection (`tidegate.rules.adaptive`) and HotspotRule
(`tidegate.rules.hotspot`); other kinds are ignored. Strategy references
resolve by name within the rule's namespace. The first invalid document, or a
reference to a missing strategy, raises RuleError naming the document and the
field, and nothing is compiled, so the caller keeps the set in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import RuleSet
from tidegate.errors import RuleError
from tidegate.rules import adaptive, faulttolerance, hotspot
from tidegate.rules.document import validate

KINDS = frozenset((faulttolerance.RULE_KIND, *faulttolerance.STRATEGY_KINDS, adaptive.KIND, hotspot.KIND))


def _applies(app: str, service: str | None) -> bool:
    return not app or service is None or app == service


def compile_rules(documents: Iterable[Mapping[str, Any]], service: str | None = None) -> RuleSet:
    """The stability rules of `documents`; with `service`, only those whose selector matches it (or has none)."""
    strategies: dict[tuple[str, str], list[faulttolerance.Strategy]] = {}
    rules: list[faulttolerance.FaultToleranceRule] = []
    adaptive_rules = []
    hotspot_rules = []
    for document in documents:
        if not isinstance(document, Mapping) or document.get("kind") not in KINDS:
            continue
        typed = validate(document)
        if isinstance(typed, faulttolerance.Strategy):
            namespace = str((document.get("metadata") or {}).get("namespace") or "default")
            strategies.setdefault((namespace, typed.name), []).append(typed)
        elif isinstance(typed, faulttolerance.FaultToleranceRule):
            rules.append(typed)
        elif isinstance(typed, adaptive.AdaptiveProtection):
            if _applies(typed.app, service):
                adaptive_rules.append(typed.rule)
        elif isinstance(typed, hotspot.HotspotDocument):
            if _applies(typed.app, service):
                hotspot_rules.append(typed.rule)
    flow: list[FlowRule] = []
    breakers: list[BreakerRule] = []
    for rule in rules:
        resolved = [_resolve(rule, item, strategies) for item in rule.strategies]
        if not _applies(rule.app, service):
            continue
        for strategy in resolved:
            for i, target in enumerate(rule.targets):
                core = strategy.build(target, f"{rule.name}/{strategy.name}", rule.document, f"spec.targets[{i}].targetResourceName")
                if isinstance(core, BreakerRule):
                    breakers.append(core)
                else:
                    flow.append(core)
    return RuleSet(flow=tuple(flow), breakers=tuple(breakers), adaptive=tuple(adaptive_rules), hotspot=tuple(hotspot_rules))


def _resolve(
    rule: faulttolerance.FaultToleranceRule,
    item: faulttolerance.Strategy | faulttolerance.StrategyRef,
    strategies: Mapping[tuple[str, str], list[faulttolerance.Strategy]],
) -> faulttolerance.Strategy:
    if isinstance(item, faulttolerance.Strategy):
        return item
    found = [s for s in strategies.get((rule.namespace, item.name), []) if not item.kind or s.kind == item.kind]
    if not found:
        kind = item.kind or "strategy"
        raise RuleError(f"{kind} {item.name!r} not found in namespace {rule.namespace!r}", document=rule.document, field=item.field)
    if len(found) > 1:
        kinds = ", ".join(sorted(s.kind for s in found))
        raise RuleError(
            f"{item.name!r} names several strategies ({kinds}): add kind to choose one", document=rule.document, field=item.field
        )
    return found[0]
