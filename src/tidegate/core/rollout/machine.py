"""The rollout's step machine: weights, windows, verdicts -> the actions the control plane carries out.

A rollout walks its steps of canary weight (5, 10, 25, 50, 100 by default).
At each step below 100 it waits one `interval`, then the runner judges that
window (tidegate.core.rollout.judge) and hands the verdict back:

- PASS: the next step; when that is 100, promotion (100 is never judged: base has no traffic left to compare with).
- FAIL: counted; past the analysis' limits the rollout aborts (weight 0), else the step's window starts again.
- INCONCLUSIVE: the window is extended by one interval (its data kept, so slow traffic adds up); past
  `inconclusive_limit` extensions in a row the rollout pauses for a person. Never a pass.

Phases: progressing -> (paused <-> progressing) -> aborted | promoted -> completed
(completed once the old instances are drained, or at once when the deployer removes them).
Every method takes `now` (seconds); nothing here reads a clock or does I/O. The state
round-trips through `to_dict` / `from_dict` (plain JSON values), so a restarted control
plane resumes at the same step (`restore` says what to apply again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tidegate.core.rollout.judge import (
    Analysis,
    Evidence,
    Gate,
    LatencyTest,
    Metric,
    Outcome,
    Verdict,
)

DEFAULT_STEPS = (5, 10, 25, 50, 100)
DEFAULT_INTERVAL_S = 60.0
#: Decisions a rollout keeps (the oldest go first); every one is also posted as an event.
MAX_DECISIONS = 200


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    ABORTED = "aborted"
    PROMOTED = "promoted"
    COMPLETED = "completed"


ACTIVE = frozenset((Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED))


@dataclass(frozen=True, slots=True)
class SetWeight:
    """Send `percent` of the service's base traffic to the new tag."""

    percent: float


@dataclass(frozen=True, slots=True)
class Promote:
    """Hand the base role to the new tag: all of the service's traffic goes to it from now on."""

    tag: str


@dataclass(frozen=True, slots=True)
class DrainOld:
    """Drain the instances that are not of the new tag (losslessly, through their agents)."""

    tag: str


Action = SetWeight | Promote | DrainOld


@dataclass(frozen=True, slots=True)
class Plan:
    """What a rollout does: the service, its new tag, the steps, the interval, how it judges."""

    service: str
    tag: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    interval_s: float = DEFAULT_INTERVAL_S
    analysis: Analysis = field(default_factory=Analysis)
    drain_old: bool = True

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100 or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps must be in (0, 100] and end at 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError("steps must increase")
        if self.interval_s <= 0:
            raise ValueError("interval must be above 0")


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing the rollout decided, with why: what the runner posts as an event."""

    at: float
    kind: str  # started, passed, failed, inconclusive, paused, resumed, aborted, promoted, completed
    step: int
    weight: float
    reasons: tuple[str, ...] = ()
    evidence: Evidence = field(default_factory=dict)


class Rollout:
    """One rollout's state; methods return the actions to carry out, in order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.phase = Phase.PROGRESSING
        self.step = 0
        self.started_at = 0.0
        self.window_start = 0.0
        self.window_end = 0.0
        self.failures = 0
        self.consecutive_failures = 0
        self.consecutive_inconclusive = 0
        self.reason = ""
        self.decisions: list[Decision] = []

    # -- reading
    @property
    def weight(self) -> float:
        """The canary weight in force."""
        if self.phase is Phase.ABORTED:
            return 0.0
        if self.phase in (Phase.PROMOTED, Phase.COMPLETED):
            return 100.0
        return self.plan.steps[self.step]

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def due(self, now: float) -> tuple[float, float] | None:
        """The window (start, end) to judge now, or None while it is still open (or nothing is judged)."""
        if self.phase is not Phase.PROGRESSING or now < self.window_end:
            return None
        return (self.window_start, self.window_end)

    # -- driving
    def start(self, now: float) -> list[Action]:
        self.started_at = now
        self._open_window(now)
        self._decide(now, "started")
        return [SetWeight(self.weight)]

    def judged(self, verdict: Verdict, now: float) -> list[Action]:
        """The runner's verdict on the window `due` gave."""
        if self.phase is not Phase.PROGRESSING:
            return []
        if verdict.outcome is Outcome.PASS:
            self.consecutive_failures = 0
            self.consecutive_inconclusive = 0
            self._decide(now, "passed", verdict)
            if self.plan.steps[self.step + 1] >= 100:
                return self._promote(now, ("every step before 100% passed",))
            self.step += 1
            self._open_window(now)
            return [SetWeight(self.weight)]
        if verdict.outcome is Outcome.FAIL:
            self.failures += 1
            self.consecutive_failures += 1
            self.consecutive_inconclusive = 0
            self._decide(now, "failed", verdict)
            analysis = self.plan.analysis
            limit = analysis.consecutive_failure_limit
            if self.failures > analysis.failure_limit or (limit is not None and self.consecutive_failures > limit):
                return self._abort(now, verdict.reasons, verdict)
            self._open_window(now)
            return []
        self.consecutive_inconclusive += 1
        self._decide(now, "inconclusive", verdict)
        if self.consecutive_inconclusive > self.plan.analysis.inconclusive_limit:
            self.phase = Phase.PAUSED
            self.reason = f"{self.consecutive_inconclusive} inconclusive windows in a row: " + "; ".join(verdict.reasons)
            self._decide(now, "paused", verdict, (self.reason,))
            return []
        self.window_end = now + self.plan.interval_s  # extended: the window keeps its start, so its data adds up
        return []

    def pause(self, now: float, reason: str = "paused by an operator") -> list[Action]:
        if self.phase is not Phase.PROGRESSING:
            raise RolloutStateError(f"cannot pause a rollout that is {self.phase}")
        self.phase = Phase.PAUSED
        self.reason = reason
        self._decide(now, "paused", reasons=(reason,))
        return []

    def resume(self, now: float) -> list[Action]:
        if self.phase is not Phase.PAUSED:
            raise RolloutStateError(f"cannot resume a rollout that is {self.phase}")
        self.phase = Phase.PROGRESSING
        self.reason = ""
        self.consecutive_inconclusive = 0
        self._open_window(now)
        self._decide(now, "resumed")
        return [SetWeight(self.weight)]

    def promote(self, now: float, reason: str = "promoted by an operator") -> list[Action]:
        if self.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            raise RolloutStateError(f"cannot promote a rollout that is {self.phase}")
        return self._promote(now, (reason,))

    def abort(self, now: float, reason: str = "aborted by an operator") -> list[Action]:
        if self.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            raise RolloutStateError(f"cannot abort a rollout that is {self.phase}")
        return self._abort(now, (reason,))

    def drained(self, now: float) -> list[Action]:
        """The old instances are drained (or left to the deployer): the rollout is complete."""
        if self.phase is not Phase.PROMOTED:
            raise RolloutStateError(f"cannot complete a rollout that is {self.phase}")
        self.phase = Phase.COMPLETED
        self._decide(now, "completed")
        return []

    def reopen(self, now: float) -> None:
        """Start the open window again at `now` (a restarted control plane lost the metrics of the one before)."""
        if self.phase is Phase.PROGRESSING:
            self._open_window(now)

    def restore(self) -> list[Action]:
        """What to apply again after a restart (every action is idempotent)."""
        if self.phase is Phase.ABORTED:
            return [SetWeight(0.0)]
        if self.phase is Phase.PROMOTED:
            return self._promotion_actions()
        if self.phase is Phase.COMPLETED:
            return []
        return [SetWeight(self.weight)]

    # -- inside
    def _open_window(self, now: float) -> None:
        self.window_start = now
        self.window_end = now + self.plan.interval_s

    def _promote(self, now: float, reasons: tuple[str, ...]) -> list[Action]:
        self.phase = Phase.PROMOTED
        self.reason = ""
        self._decide(now, "promoted", reasons=reasons)
        return self._promotion_actions()

    def _promotion_actions(self) -> list[Action]:
        actions: list[Action] = [SetWeight(100.0), Promote(self.plan.tag)]
        if self.plan.drain_old:
            actions.append(DrainOld(self.plan.tag))
        return actions

    def _abort(self, now: float, reasons: tuple[str, ...], verdict: Verdict | None = None) -> list[Action]:
        self.phase = Phase.ABORTED
        self.reason = "; ".join(reasons)
        self._decide(now, "aborted", verdict, reasons)
        return [SetWeight(0.0)]

    def _decide(self, now: float, kind: str, verdict: Verdict | None = None, reasons: tuple[str, ...] | None = None) -> None:
        self.decisions.append(
            Decision(
                at=now,
                kind=kind,
                step=self.step,
                weight=self.weight,
                reasons=verdict.reasons if reasons is None and verdict is not None else (reasons or ()),
                evidence=dict(verdict.evidence) if verdict is not None else {},
            )
        )
        del self.decisions[:-MAX_DECISIONS]

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": plan_to_dict(self.plan),
            "phase": str(self.phase),
            "step": self.step,
            "started_at": self.started_at,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_inconclusive": self.consecutive_inconclusive,
            "reason": self.reason,
            "decisions": [
                {
                    "at": d.at,
                    "kind": d.kind,
                    "step": d.step,
                    "weight": d.weight,
                    "reasons": list(d.reasons),
                    "evidence": dict(d.evidence),
                }
                for d in self.decisions
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        """The rollout `to_dict` gave; ValueError when `data` is not one."""
        try:
            rollout = cls(plan_from_dict(data["plan"]))
            rollout.phase = Phase(data["phase"])
            rollout.step = int(data["step"])
            if not 0 <= rollout.step < len(rollout.plan.steps):
                raise ValueError(f"step {rollout.step} out of range")
            rollout.started_at = float(data["started_at"])
            rollout.window_start = float(data["window_start"])
            rollout.window_end = float(data["window_end"])
            rollout.failures = int(data["failures"])
            rollout.consecutive_failures = int(data["consecutive_failures"])
            rollout.consecutive_inconclusive = int(data["consecutive_inconclusive"])
            rollout.reason = str(data["reason"])
            rollout.decisions = [
                Decision(
                    at=float(d["at"]),
                    kind=str(d["kind"]),
                    step=int(d["step"]),
                    weight=float(d["weight"]),
                    reasons=tuple(str(r) for r in d["reasons"]),
                    evidence=dict(d["evidence"]),
                )
                for d in data["decisions"]
            ]
        except (KeyError, TypeError) as bad:
            raise ValueError(f"not a saved rollout: {bad!r}") from None
        return rollout


class RolloutStateError(Exception):
    """An operator's action the rollout's phase does not allow (e.g. resuming an aborted rollout)."""


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    analysis = plan.analysis
    test = analysis.latency_test
    return {
        "service": plan.service,
        "tag": plan.tag,
        "steps": list(plan.steps),
        "interval_s": plan.interval_s,
        "drain_old": plan.drain_old,
        "analysis": {
            "gates": [
                {"metric": str(g.metric), "resource": g.resource, "maximum": g.maximum, "relative": g.relative} for g in analysis.gates
            ],
            "latency_test": None if test is None else {"resource": test.resource, "alpha": test.alpha, "min_shift_ms": test.min_shift_ms},
            "min_requests": analysis.min_requests,
            "failure_limit": analysis.failure_limit,
            "consecutive_failure_limit": analysis.consecutive_failure_limit,
            "inconclusive_limit": analysis.inconclusive_limit,
        },
    }


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    a = data["analysis"]
    test = a["latency_test"]
    analysis = Analysis(
        gates=tuple(Gate(Metric(g["metric"]), str(g["resource"]), _optional(g["maximum"]), _optional(g["relative"])) for g in a["gates"]),
        latency_test=None if test is None else LatencyTest(str(test["resource"]), float(test["alpha"]), float(test["min_shift_ms"])),
        min_requests=int(a["min_requests"]),
        failure_limit=int(a["failure_limit"]),
        consecutive_failure_limit=None if a["consecutive_failure_limit"] is None else int(a["consecutive_failure_limit"]),
        inconclusive_limit=int(a["inconclusive_limit"]),
    )
    return Plan(
        service=str(data["service"]),
        tag=str(data["tag"]),
        steps=tuple(float(s) for s in data["steps"]),
        interval_s=float(data["interval_s"]),
        analysis=analysis,
        drain_old=bool(data["drain_old"]),
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)
