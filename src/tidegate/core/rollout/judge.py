"""The judge: one window of gray against base -> PASS, FAIL (the numbers that failed) or INCONCLUSIVE.

A window holds, per resource (`ALL` is the service's inbound rollup), the gray
(tagged) and base sides' requests, errors, p99 and latency sample. Gates are
absolute (gray's error rate at most x, gray's p99 at most y ms) or relative to
base (gray's p99 at most `factor` x base's; gray's error rate not significantly
above base's by a one-sided two-proportion test at level `alpha`). The optional
statistical gate fails when Mann-Whitney says gray's latencies are larger
(one-sided p below `alpha`) *and* the Hodges-Lehmann shift is above `min_shift_ms`,
so a huge sample never fails on a shift nobody would notice.

Too few requests on a side a gate needs is INCONCLUSIVE, never PASS: no data
is not good news. A FAIL wins over INCONCLUSIVE (enough gray data showing a
failure is enough to act on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tidegate.core.rollout.stats import Grouped, hodges_lehmann, mann_whitney_u, two_proportions

#: The resource of a service's inbound rollup (the metrics store's `ALL`).
ALL = "*"


class Metric(StrEnum):
    ERROR_RATE = "errorRate"
    P99_LATENCY = "p99Latency"


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Gate:
    """`maximum`: absolute bound on gray (an error rate in [0, 1], or p99 in ms).
    `relative`: for errorRate the significance level of "gray above base"; for
    p99Latency the factor gray's p99 may reach over base's."""

    metric: Metric
    resource: str = ALL
    maximum: float | None = None
    relative: float | None = None


@dataclass(frozen=True, slots=True)
class LatencyTest:
    """The optional Mann-Whitney judge on latency samples (as Kayenta)."""

    resource: str = ALL
    alpha: float = 0.01
    min_shift_ms: float = 0.0


#: Success at least 99% and not significantly worse than base (5%); p99 at most 1.2 x base's.
DEFAULT_GATES = (
    Gate(Metric.ERROR_RATE, maximum=0.01, relative=0.05),
    Gate(Metric.P99_LATENCY, relative=1.2),
)


@dataclass(frozen=True, slots=True)
class Analysis:
    """How windows are judged, and how many bad ones a rollout tolerates (after Argo Rollouts).

    A rollout aborts when its failed windows pass `failure_limit`, or its failed
    windows in a row pass `consecutive_failure_limit` (None: no such limit); it
    pauses for a person when its inconclusive windows in a row pass
    `inconclusive_limit`."""

    gates: tuple[Gate, ...] = DEFAULT_GATES
    latency_test: LatencyTest | None = None
    min_requests: int = 50
    failure_limit: int = 0
    consecutive_failure_limit: int | None = None
    inconclusive_limit: int = 5


@dataclass(frozen=True, slots=True)
class Side:
    """One side's numbers over a window; `latency_ms` a grouped sample (value ms -> count)."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    latency_ms: Grouped = field(default_factory=dict)


Window = Mapping[str, tuple[Side, Side]]  # resource -> (gray, base)
Evidence = dict[str, float | int | None]

_EMPTY = Side()


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...] = ()
    evidence: Evidence = field(default_factory=dict)


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f}%"


class _Findings:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.unsure: list[str] = []
        self.evidence: Evidence = {}


def judge(analysis: Analysis, window: Window) -> Verdict:
    """The verdict on one window."""
    found = _Findings()
    for resource, (gray, base) in sorted(window.items()):
        for side, numbers in (("gray", gray), ("base", base)):
            found.evidence[f"{resource}.{side}.requests"] = numbers.requests
            found.evidence[f"{resource}.{side}.errors"] = numbers.errors
            found.evidence[f"{resource}.{side}.p99_ms"] = numbers.p99_ms
    for gate in analysis.gates:
        gray, base = window.get(gate.resource, (_EMPTY, _EMPTY))
        if gray.requests < analysis.min_requests:
            found.unsure.append(f"gray had {gray.requests} requests on {gate.resource} (at least {analysis.min_requests} needed)")
            continue
        if gate.metric is Metric.ERROR_RATE:
            _error_rate(gate, gray, base, analysis.min_requests, found)
        else:
            _p99(gate, gray, base, analysis.min_requests, found)
    if analysis.latency_test is not None:
        _latency_test(analysis.latency_test, window, analysis.min_requests, found)
    if found.failed:
        return Verdict(Outcome.FAIL, tuple(found.failed), found.evidence)
    if found.unsure:
        return Verdict(Outcome.INCONCLUSIVE, tuple(dict.fromkeys(found.unsure)), found.evidence)
    return Verdict(Outcome.PASS, (), found.evidence)


def _error_rate(gate: Gate, gray: Side, base: Side, min_requests: int, found: _Findings) -> None:
    rate = gray.errors / gray.requests
    where = gate.resource
    if gate.maximum is not None and rate > gate.maximum:
        found.failed.append(f"gray error rate {_percent(rate)} on {where} ({gray.errors}/{gray.requests}) above {_percent(gate.maximum)}")
    if gate.relative is None:
        return
    if base.requests < min_requests:
        found.unsure.append(f"base had {base.requests} requests on {where} (at least {min_requests} needed to compare)")
        return
    test = two_proportions(gray.errors, gray.requests, base.errors, base.requests)
    found.evidence[f"{where}.error_rate.p"] = test.p_greater
    if test.p_greater < gate.relative:
        found.failed.append(
            f"gray error rate {_percent(test.rate_a)} on {where} significantly above base {_percent(test.rate_b)}"
            f" (p={test.p_greater:.2g} < {gate.relative:g})"
        )


def _p99(gate: Gate, gray: Side, base: Side, min_requests: int, found: _Findings) -> None:
    where = gate.resource
    if gray.p99_ms is None:
        found.unsure.append(f"gray has no latency on {where}")
        return
    if gate.maximum is not None and gray.p99_ms > gate.maximum:
        found.failed.append(f"gray p99 {gray.p99_ms:.1f} ms on {where} above {gate.maximum:g} ms")
    if gate.relative is None:
        return
    if base.requests < min_requests or base.p99_ms is None:
        found.unsure.append(f"base had {base.requests} requests on {where} (at least {min_requests} with latency needed to compare)")
        return
    if gray.p99_ms > gate.relative * base.p99_ms:
        found.failed.append(
            f"gray p99 {gray.p99_ms:.1f} ms on {where} above {gate.relative:g} x base p99 {base.p99_ms:.1f} ms"
            f" ({gate.relative * base.p99_ms:.1f} ms)"
        )


def _latency_test(test: LatencyTest, window: Window, min_requests: int, found: _Findings) -> None:
    gray, base = window.get(test.resource, (_EMPTY, _EMPTY))
    n_gray = sum(gray.latency_ms.values())
    n_base = sum(base.latency_ms.values())
    if n_gray < min_requests or n_base < min_requests:
        found.unsure.append(f"latency samples on {test.resource}: gray {n_gray}, base {n_base} (at least {min_requests} each needed)")
        return
    result = mann_whitney_u(gray.latency_ms, base.latency_ms)
    shift = hodges_lehmann(gray.latency_ms, base.latency_ms)
    found.evidence[f"{test.resource}.mann_whitney.u"] = result.u
    found.evidence[f"{test.resource}.mann_whitney.p_greater"] = result.p_greater
    found.evidence[f"{test.resource}.hodges_lehmann_ms"] = shift
    if result.p_greater < test.alpha and shift > test.min_shift_ms:
        found.failed.append(
            f"gray latency on {test.resource} larger than base: Mann-Whitney p={result.p_greater:.2g} < {test.alpha:g},"
            f" shift {shift:.1f} ms (Hodges-Lehmann) above {test.min_shift_ms:g} ms"
        )
