"""A stability document the agent cannot compile is isolated: it keeps its last valid version, the others update."""

from __future__ import annotations

from typing import Any

from tidegate.agent.config import AgentConfig
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.rulebook import StoredRule

FT = "fault-tolerance.opensergo.io/v1alpha1"


def _runtime() -> tuple[AgentRuntime, Stability, list[dict[str, Any]]]:
    runtime = AgentRuntime(config=AgentConfig(service="shop"), metrics=AgentMetrics())
    posted: list[dict[str, Any]] = []
    stability = Stability(runtime, events=StabilityEvents(posted.append, "shop", flush_s=3600))
    runtime.add(stability)
    runtime.rulebook.add_listener(stability.on_rules_changed)
    return runtime, stability, posted


def _put(runtime: AgentRuntime, document: dict[str, Any], revision: int) -> None:
    runtime.rulebook.put(StoredRule("default", document["kind"], document["metadata"]["name"], revision, document))


def _rule(name: str, resource: str, strategy: str) -> dict[str, Any]:
    return {
        "apiVersion": FT,
        "kind": "FaultToleranceRule",
        "metadata": {"name": name},
        "spec": {"targets": [{"targetResourceName": resource}], "strategies": [{"name": strategy}]},
    }


def _limit(name: str, threshold: float) -> dict[str, Any]:
    return {"apiVersion": FT, "kind": "RateLimitStrategy", "metadata": {"name": name}, "spec": {"threshold": threshold}}


def _flow(stability: Stability) -> list[tuple[str, float]]:
    return sorted((rule.resource, rule.threshold) for rule in stability.governor.rules.flow)


def test_a_rule_naming_a_missing_strategy_keeps_its_last_version_and_the_others_still_update() -> None:
    runtime, stability, posted = _runtime()
    _put(runtime, _limit("five", 5), 1)
    _put(runtime, _limit("seven", 7), 2)
    _put(runtime, _rule("a", "GET /a", "five"), 3)
    _put(runtime, _rule("b", "GET /b", "seven"), 4)
    assert _flow(stability) == [("GET /a", 5), ("GET /b", 7)]

    _put(runtime, _rule("a", "GET /a", "no-such-strategy"), 5)  # refused: "a" keeps its last valid version
    _put(runtime, _limit("seven", 70), 6)  # ... and "b"'s strategy still updates
    _put(runtime, _rule("c", "GET /c", "seven"), 7)  # ... and a new rule still arrives
    assert _flow(stability) == [("GET /a", 5), ("GET /b", 70), ("GET /c", 70)]
    assert stability.reload() is False

    stability.events.flush()
    refused = [event for event in posted if event["type"] == "rule-refused"]
    assert len(refused) == 1  # once, though the set was compiled three times since
    assert refused[0]["document"] == "FaultToleranceRule/a" and "no-such-strategy" in refused[0]["error"]

    _put(runtime, _rule("a", "GET /a", "seven"), 8)  # fixed: in force again, refusal forgotten
    assert _flow(stability) == [("GET /a", 70), ("GET /b", 70), ("GET /c", 70)]
    assert stability.reload() is True


def test_a_rule_that_never_compiled_is_left_out_and_a_deleted_strategy_keeps_its_rule() -> None:
    runtime, stability, _ = _runtime()
    _put(runtime, _rule("dangling", "GET /d", "missing"), 1)
    _put(runtime, _limit("five", 5), 2)
    _put(runtime, _rule("a", "GET /a", "five"), 3)
    assert _flow(stability) == [("GET /a", 5)]
    runtime.rulebook.remove(("default", "RateLimitStrategy", "five"), 4)  # the store refuses this; an agent copes anyway
    assert _flow(stability) == [("GET /a", 5)]
    runtime.rulebook.remove(("default", "FaultToleranceRule", "a"), 5)
    assert _flow(stability) == []


def test_an_invalid_strategy_version_keeps_the_last_valid_one() -> None:
    runtime, stability, _ = _runtime()
    _put(runtime, _limit("five", 5), 1)
    _put(runtime, _rule("a", "GET /a", "five"), 2)
    _put(runtime, {**_limit("five", 5), "spec": {"threshold": -1}}, 3)
    _put(runtime, _rule("b", "GET /b", "five"), 4)
    assert _flow(stability) == [("GET /a", 5), ("GET /b", 5)]
