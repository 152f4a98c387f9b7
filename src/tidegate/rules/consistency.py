"""What makes a set of documents one an agent would refuse in part, though each document is valid alone.

- a FaultToleranceRule whose strategies do not resolve (`stability.reference_problems`);
- two ServiceSettings for one service (an agent applies the first by namespace and name);
- CanaryRules of one service whose shares pass 100% or whose sticky keys differ (an agent cuts them).

`set_problems(documents)` names each document at fault, by key; the control plane
refuses a write that adds one (409), so the store holds only sets agents take whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidegate.core.lanes import CanaryRule
from tidegate.errors import RuleError
from tidegate.rules.document import validate
from tidegate.rules.lanes import CANARY_KIND
from tidegate.rules.settings import KIND as SETTINGS_KIND
from tidegate.rules.settings import ServiceSettings
from tidegate.rules.stability import Problem, reference_problems

#: Kinds whose documents can conflict with others.
KINDS = frozenset((SETTINGS_KIND, CANARY_KIND))


def _key(document: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    return (str(metadata.get("namespace") or "default"), str(document.get("kind")), str(metadata.get("name")))


def set_problems(documents: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Every document of `documents` at fault in the set (invalid ones are skipped: refused on their own)."""
    every = list(documents)
    problems = reference_problems(every)
    settings: dict[str, tuple[str, str, str]] = {}
    canaries: dict[str, list[tuple[tuple[str, str, str], CanaryRule]]] = {}
    for document in sorted((d for d in every if isinstance(d, Mapping) and d.get("kind") in (SETTINGS_KIND, CANARY_KIND)), key=_key):
        try:
            typed = validate(document)
        except RuleError:
            continue
        key = _key(document)
        if isinstance(typed, ServiceSettings):
            owner = settings.setdefault(typed.service, key)
            if owner != key:
                problems.append(
                    (
                        key,
                        RuleError(
                            f"service {typed.service!r} is already set by {owner[1]}/{owner[2]} (namespace {owner[0]}): one document per service",
                            document=f"{key[1]}/{key[2]}",
                            field="spec.service",
                        ),
                    )
                )
        elif isinstance(typed, CanaryRule):
            canaries.setdefault(typed.service, []).append((key, typed))
    for service, rules in canaries.items():
        total = 0.0
        first_key, first = rules[0]
        for key, rule in rules:
            total += rule.percent
            label = f"{key[1]}/{key[2]}"
            if total > 100:
                problems.append(
                    (
                        key,
                        RuleError(
                            f"canaries of service {service!r} would add up to {total:g}% (at most 100%)",
                            document=label,
                            field="spec.percent",
                        ),
                    )
                )
            if rule.sticky_key != first.sticky_key:
                problems.append(
                    (
                        key,
                        RuleError(
                            f"canaries of service {service!r} must share one sticky key: {first_key[1]}/{first_key[2]} has another",
                            document=label,
                            field="spec.stickyKey",
                        ),
                    )
                )
    return problems
