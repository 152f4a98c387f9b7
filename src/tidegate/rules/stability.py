"""Stability documents in force -> one typed `RuleSet` for the Governor.

Reads FaultToleranceRule and its strategy kinds (`tidegate.rules.faulttolerance`),
AdaptiveProtection (`tidegate.rules.adaptive`) and HotspotRule
(`tidegate.rules.hotspot`); other kinds are ignored. Strategy references
resolve by name within the rule's namespace.

- `compile_rules(documents)`: all or nothing; the first invalid document, or a
  reference to a missing strategy, raises RuleError naming the document and
  the field (`tidegate.guard`'s local rules).
- `IsolatingCompiler`: what an agent uses. Each document compiles on its own;
  one that fails keeps its last valid version in force (or none) and is
  reported, and the others still update.
- `reference_problems(documents)`: the references that do not resolve, by
  referrer; the control plane refuses a write or a delete that adds one, so the
  store never holds a set an agent would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidegate.core.adaptive import AdaptiveRule
from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import RuleSet
from tidegate.core.hotspot import HotspotRule
from tidegate.core.rulebook import RuleKey
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
        if not isinstance(document, Mapping) or not isinstance(document.get("kind"), str) or document["kind"] not in KINDS:
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


CoreRule = FlowRule | BreakerRule | AdaptiveRule | HotspotRule
Problem = tuple[RuleKey, RuleError]


def _key(document: Mapping[str, Any]) -> RuleKey:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    return (str(metadata.get("namespace") or "default"), str(document.get("kind")), str(metadata.get("name")))


def _strategy_table(
    strategies: Iterable[faulttolerance.Strategy | None], keys: Iterable[RuleKey]
) -> dict[tuple[str, str], list[faulttolerance.Strategy]]:
    table: dict[tuple[str, str], list[faulttolerance.Strategy]] = {}
    for key, strategy in zip(keys, strategies):
        if strategy is not None:
            table.setdefault((key[0], strategy.name), []).append(strategy)
    return table


def _build(rule: faulttolerance.FaultToleranceRule, table: Mapping[tuple[str, str], list[faulttolerance.Strategy]]) -> list[CoreRule]:
    """The core rules of one FaultToleranceRule, for any service (its app is the caller's business)."""
    built: list[CoreRule] = []
    for strategy in [_resolve(rule, item, table) for item in rule.strategies]:
        for i, target in enumerate(rule.targets):
            built.append(strategy.build(target, f"{rule.name}/{strategy.name}", rule.document, f"spec.targets[{i}].targetResourceName"))
    return built


def reference_problems(documents: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Every FaultToleranceRule among `documents` whose strategies do not resolve (missing, ambiguous,
    or not valid for its targets), with the error naming the field. Invalid documents are skipped
    (they are refused on their own)."""
    strategies: list[faulttolerance.Strategy] = []
    strategy_keys: list[RuleKey] = []
    rules: list[tuple[RuleKey, faulttolerance.FaultToleranceRule]] = []
    for document in documents:
        if not isinstance(document, Mapping) or document.get("kind") not in (faulttolerance.RULE_KIND, *faulttolerance.STRATEGY_KINDS):
            continue
        try:
            typed = validate(document)
        except RuleError:
            continue
        if isinstance(typed, faulttolerance.Strategy):
            strategies.append(typed)
            strategy_keys.append(_key(document))
        elif isinstance(typed, faulttolerance.FaultToleranceRule):
            rules.append((_key(document), typed))
    table = _strategy_table(strategies, strategy_keys)
    problems: list[Problem] = []
    for key, rule in rules:
        try:
            _build(rule, table)
        except RuleError as error:
            problems.append((key, error))
    return problems


class IsolatingCompiler:
    """Compiles stability documents one by one for `service`, keeping each one's last valid output.

    A document that fails (invalid, or a FaultToleranceRule whose strategies no
    longer resolve) keeps what it last compiled to, or nothing if it never
    compiled; `compile` returns the rule set with the problems it met. Not
    thread-safe: the caller compiles one set at a time."""

    def __init__(self, service: str | None = None) -> None:
        self.service = service
        self._strategies: dict[RuleKey, faulttolerance.Strategy] = {}
        self._outputs: dict[RuleKey, tuple[CoreRule, ...]] = {}

    def compile(self, documents: Iterable[Mapping[str, Any]]) -> tuple[RuleSet, list[Problem]]:
        problems: list[Problem] = []
        strategies: dict[RuleKey, faulttolerance.Strategy] = {}
        others: list[tuple[RuleKey, Mapping[str, Any]]] = []
        for document in documents:
            if not isinstance(document, Mapping) or not isinstance(document.get("kind"), str) or document["kind"] not in KINDS:
                continue
            key = _key(document)
            if document.get("kind") not in faulttolerance.STRATEGY_KINDS:
                others.append((key, document))
                continue
            try:
                typed = validate(document)
            except RuleError as error:
                problems.append((key, error))
                previous = self._strategies.get(key)
                if previous is not None:
                    strategies[key] = previous
                continue
            strategies[key] = typed
        self._strategies = strategies
        table = _strategy_table(strategies.values(), strategies.keys())
        outputs: dict[RuleKey, tuple[CoreRule, ...]] = {}
        for key, document in others:
            try:
                outputs[key] = self._compile_one(document, table)
            except RuleError as error:
                problems.append((key, error))
                outputs[key] = self._outputs.get(key, ())
        self._outputs = outputs
        every = [rule for output in outputs.values() for rule in output]
        return (
            RuleSet(
                flow=tuple(rule for rule in every if isinstance(rule, FlowRule)),
                breakers=tuple(rule for rule in every if isinstance(rule, BreakerRule)),
                adaptive=tuple(rule for rule in every if isinstance(rule, AdaptiveRule)),
                hotspot=tuple(rule for rule in every if isinstance(rule, HotspotRule)),
            ),
            problems,
        )

    def _compile_one(
        self, document: Mapping[str, Any], table: Mapping[tuple[str, str], list[faulttolerance.Strategy]]
    ) -> tuple[CoreRule, ...]:
        typed = validate(document)
        if isinstance(typed, faulttolerance.FaultToleranceRule):
            built = _build(typed, table)  # resolved even where it does not apply, so a dangling one is reported everywhere
            return tuple(built) if _applies(typed.app, self.service) else ()
        if isinstance(typed, adaptive.AdaptiveProtection):
            return (typed.rule,) if _applies(typed.app, self.service) else ()
        if isinstance(typed, hotspot.HotspotDocument):
            return (typed.rule,) if _applies(typed.app, self.service) else ()
        return ()
