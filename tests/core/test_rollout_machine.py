"""The rollout step machine: steps, windows, limits, operator actions, persistence; time passed in."""

from __future__ import annotations

import json

import pytest

from tidegate.core.rollout.judge import Analysis, Outcome, Verdict
from tidegate.core.rollout.machine import DrainOld, Phase, Plan, Promote, Rollout, RolloutStateError, SetWeight

PASS = Verdict(Outcome.PASS)
FAIL = Verdict(Outcome.FAIL, ("gray error rate 3.00% on * above 1.00%",), {"*.gray.errors": 30})
UNSURE = Verdict(Outcome.INCONCLUSIVE, ("gray had 3 requests on * (at least 50 needed)",))


def started(plan: Plan | None = None) -> Rollout:
    rollout = Rollout(plan or Plan("orders", "v2", steps=(5, 10, 25, 50, 100), interval_s=60.0))
    assert rollout.start(1000.0) == [SetWeight(rollout.plan.steps[0])]
    return rollout


def test_steps_walk_on_passes_then_promote_at_100() -> None:
    rollout = started()
    assert rollout.due(1059.9) is None
    assert rollout.due(1060.0) == (1000.0, 1060.0)
    assert rollout.judged(PASS, 1060.0) == [SetWeight(10)]
    assert rollout.judged(PASS, 1120.0) == [SetWeight(25)]
    assert rollout.judged(PASS, 1180.0) == [SetWeight(50)]
    assert rollout.judged(PASS, 1240.0) == [SetWeight(100), Promote("v2"), DrainOld("v2")]
    assert rollout.phase is Phase.PROMOTED and rollout.weight == 100
    assert rollout.due(9999.0) is None
    rollout.drained(1250.0)
    assert rollout.phase is Phase.COMPLETED
    assert [d.kind for d in rollout.decisions] == ["started", "passed", "passed", "passed", "passed", "promoted", "completed"]


def test_first_failure_aborts_to_weight_zero_with_its_reasons() -> None:
    rollout = started()
    assert rollout.judged(FAIL, 1060.0) == [SetWeight(0.0)]
    assert rollout.phase is Phase.ABORTED and rollout.weight == 0
    assert rollout.reason == "gray error rate 3.00% on * above 1.00%"
    last = rollout.decisions[-1]
    assert (last.kind, last.step, last.evidence) == ("aborted", 0, {"*.gray.errors": 30})
    assert rollout.judged(PASS, 1120.0) == []  # an aborted rollout judges nothing more


def test_failure_limit_and_consecutive_failures() -> None:
    rollout = started(Plan("orders", "v2", interval_s=10.0, analysis=Analysis(failure_limit=2, consecutive_failure_limit=1)))
    assert rollout.judged(FAIL, 1010.0) == []  # 1 failure: tolerated, the step's window starts again
    assert (rollout.step, rollout.window_start, rollout.window_end) == (0, 1010.0, 1020.0)
    assert rollout.judged(PASS, 1020.0) == [SetWeight(10)]
    assert rollout.judged(FAIL, 1030.0) == []  # 2 failures, 1 in a row
    assert rollout.judged(FAIL, 1040.0) == [SetWeight(0.0)]  # 3 > failureLimit 2 (and 2 in a row > 1)
    assert rollout.phase is Phase.ABORTED


def test_consecutive_limit_alone_aborts() -> None:
    rollout = started(Plan("orders", "v2", interval_s=10.0, analysis=Analysis(failure_limit=10, consecutive_failure_limit=1)))
    rollout.judged(FAIL, 1010.0)
    assert rollout.judged(FAIL, 1020.0) == [SetWeight(0.0)]


def test_inconclusive_extends_the_window_then_pauses() -> None:
    rollout = started(Plan("orders", "v2", interval_s=60.0, analysis=Analysis(inconclusive_limit=2)))
    assert rollout.judged(UNSURE, 1060.0) == []
    assert rollout.due(1100.0) is None
    assert rollout.due(1120.0) == (1000.0, 1120.0)  # extended: same start, one more interval
    assert rollout.step == 0 and rollout.weight == 5
    rollout.judged(UNSURE, 1120.0)
    rollout.judged(UNSURE, 1180.0)
    assert rollout.phase is Phase.PAUSED and rollout.weight == 5
    assert rollout.reason.startswith("3 inconclusive windows in a row")
    assert rollout.due(5000.0) is None
    assert rollout.resume(2000.0) == [SetWeight(5)]
    assert rollout.due(2060.0) == (2000.0, 2060.0)  # a fresh window after a pause


def test_operator_actions_and_what_each_phase_allows() -> None:
    rollout = started()
    rollout.pause(1010.0)
    with pytest.raises(RolloutStateError):
        rollout.pause(1011.0)
    assert rollout.promote(1020.0) == [SetWeight(100.0), Promote("v2"), DrainOld("v2")]
    with pytest.raises(RolloutStateError):
        rollout.abort(1030.0)
    other = started(Plan("orders", "v2", drain_old=False))
    assert other.abort(1010.0, "bad numbers seen by hand") == [SetWeight(0.0)]
    assert other.reason == "bad numbers seen by hand"
    with pytest.raises(RolloutStateError):
        other.resume(1020.0)
    left = started(Plan("orders", "v2", drain_old=False))
    assert left.promote(1010.0) == [SetWeight(100.0), Promote("v2")]


def test_state_round_trips_through_json_at_the_same_step() -> None:
    rollout = started(Plan("orders", "v2", steps=(1, 20, 100), interval_s=30.0, analysis=Analysis(failure_limit=1)))
    rollout.judged(PASS, 1030.0)
    rollout.judged(FAIL, 1060.0)
    saved = json.loads(json.dumps(rollout.to_dict()))
    again = Rollout.from_dict(saved)
    assert again.to_dict() == rollout.to_dict()
    assert (again.step, again.weight, again.failures, again.window_end) == (1, 20, 1, 1090.0)
    assert again.restore() == [SetWeight(20)]
    assert again.judged(FAIL, 1090.0) == [SetWeight(0.0)]  # its failure count came along
    assert Rollout.from_dict(json.loads(json.dumps(again.to_dict()))).restore() == [SetWeight(0.0)]
    with pytest.raises(ValueError):
        Rollout.from_dict({"plan": saved["plan"]})


def test_reopen_starts_the_open_window_again_and_only_while_progressing() -> None:
    rollout = started()
    rollout.judged(PASS, 1060.0)
    rollout.reopen(1100.0)
    assert (rollout.step, rollout.window_start, rollout.window_end) == (1, 1100.0, 1160.0)
    rollout.pause(1110.0)
    rollout.reopen(1200.0)
    assert rollout.window_start == 1100.0


def test_plan_refuses_bad_steps_and_intervals() -> None:
    for steps in ((), (5, 50), (10, 5, 100), (0, 100), (50, 50, 100)):
        with pytest.raises(ValueError):
            Plan("orders", "v2", steps=steps)
    with pytest.raises(ValueError):
        Plan("orders", "v2", interval_s=0)
