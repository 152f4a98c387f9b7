"""Two stability reloads at once: the newer rule set is the one in force, its resource sets included.

A reload that compiled older documents must never land after a newer one:
not the governor's rules, nor `named`/`inbound_governed` (which decide whether
a call goes through the governor at all). The older reload is held right where
it computes `named`, while a rule change reloads on the main thread.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tidegate.agent import stability as stability_module
from tidegate.agent.config import AgentConfig
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.rulebook import StoredRule

FT = "fault-tolerance.opensergo.io/v1alpha1"


def _put(runtime: AgentRuntime, kind: str, name: str, revision: int, spec: dict[str, Any]) -> None:
    document = {"apiVersion": FT, "kind": kind, "metadata": {"name": name}, "spec": spec}
    runtime.rulebook.put(StoredRule("default", kind, name, revision, document))


def _rule(runtime: AgentRuntime, name: str, resource: str, revision: int) -> None:
    _put(runtime, "FaultToleranceRule", name, revision, {"targets": [{"targetResourceName": resource}], "strategies": [{"name": "five"}]})


def test_an_older_reload_never_lands_its_resource_sets_after_a_newer_one(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = AgentRuntime(config=AgentConfig(service="shop"), metrics=AgentMetrics())
    stability = Stability(runtime, events=StabilityEvents(lambda event: None, "shop", flush_s=3600))
    runtime.add(stability)
    _put(runtime, "RateLimitStrategy", "five", 1, {"threshold": 5})
    _rule(runtime, "a", "GET /a", 2)
    runtime.rulebook.add_listener(stability.on_rules_changed)

    original = stability_module._named
    older_is_held = threading.Event()
    newer_is_done = threading.Event()

    def held_named(rules: Any) -> frozenset[str]:
        if threading.current_thread() is older:
            older_is_held.set()
            newer_is_done.wait(timeout=2)  # with the swap under the lock the newer reload waits for this one instead
        return original(rules)

    monkeypatch.setattr(stability_module, "_named", held_named)
    older = threading.Thread(target=stability.reload)  # compiles {five, a}
    older.start()
    assert older_is_held.wait(timeout=10)
    _rule(runtime, "b", "GET /b", 3)  # the newer reload, on this thread: {five, a, b}
    newer_is_done.set()
    older.join(timeout=10)

    assert sorted(rule.resource for rule in stability.governor.rules.flow) == ["GET /a", "GET /b"]
    assert stability.governs("GET /b") and stability.named == frozenset({"GET /a", "GET /b"})
