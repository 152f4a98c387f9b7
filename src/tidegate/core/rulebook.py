"""The agent's live copy of the rule documents in force, applied by revision.

Keys are (namespace, kind, name). Each document keeps the revision at which it
was written, so a replayed or reordered event never rolls a rule back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RuleKey = tuple[str, str, str]  # (namespace, kind, name)


@dataclass(frozen=True, slots=True)
class StoredRule:
    namespace: str
    kind: str
    name: str
    revision: int
    document: Mapping[str, Any]

    @property
    def key(self) -> RuleKey:
        return (self.namespace, self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "revision": self.revision,
            "document": dict(self.document),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredRule:
        return cls(
            namespace=str(data["namespace"]),
            kind=str(data["kind"]),
            name=str(data["name"]),
            revision=int(data["revision"]),
            document=data["document"],
        )


RuleListener = Callable[[str], None]  # called with the kind whose documents changed


class RuleBook:
    """Rule documents in force, by key; listeners hear which kinds changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[RuleKey, StoredRule] = {}
        self._listeners: list[RuleListener] = []

    def add_listener(self, listener: RuleListener) -> None:
        self._listeners.append(listener)

    def of_kind(self, kind: str) -> tuple[StoredRule, ...]:
        return tuple(rule for rule in self._rules.values() if rule.kind == kind)

    def all(self) -> tuple[StoredRule, ...]:
        return tuple(self._rules.values())

    def get(self, key: RuleKey) -> StoredRule | None:
        return self._rules.get(key)

    def replace(self, rules: Iterable[StoredRule]) -> None:
        fresh = {rule.key: rule for rule in rules}
        with self._lock:
            kinds = {k[1] for k in self._rules} | {k[1] for k in fresh}
            changed = {kind for kind in kinds if self._kind_view(self._rules, kind) != self._kind_view(fresh, kind)}
            self._rules = fresh
        self._notify(changed)

    def put(self, rule: StoredRule) -> bool:
        with self._lock:
            current = self._rules.get(rule.key)
            if current is not None and current.revision >= rule.revision:
                return False
            self._rules = {**self._rules, rule.key: rule}
        self._notify({rule.kind})
        return True

    def remove(self, key: RuleKey, revision: int) -> bool:
        with self._lock:
            current = self._rules.get(key)
            if current is None or current.revision >= revision:
                return False
            self._rules = {k: v for k, v in self._rules.items() if k != key}
        self._notify({key[1]})
        return True

    @staticmethod
    def _kind_view(rules: Mapping[RuleKey, StoredRule], kind: str) -> dict[RuleKey, int]:
        return {k: v.revision for k, v in rules.items() if k[1] == kind}

    def _notify(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            for listener in self._listeners:
                listener(kind)
