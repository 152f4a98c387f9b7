"""The rollout judge: absolute and relative gates, the latency test, and no pass on no data."""

from __future__ import annotations

from tidegate.core.rollout.judge import ALL, Analysis, Gate, LatencyTest, Metric, Outcome, Side, judge

DEFAULT = Analysis()


def window(gray: Side, base: Side, resource: str = ALL) -> dict[str, tuple[Side, Side]]:
    return {resource: (gray, base)}


def test_healthy_gray_passes() -> None:
    verdict = judge(DEFAULT, window(Side(500, 1, 20.0), Side(9500, 20, 19.0)))
    assert verdict.outcome is Outcome.PASS
    assert verdict.evidence["*.gray.requests"] == 500
    assert verdict.evidence["*.base.p99_ms"] == 19.0


def test_error_rate_above_the_absolute_gate_fails_with_its_numbers() -> None:
    verdict = judge(DEFAULT, window(Side(1000, 30, 20.0), Side(19000, 0, 20.0)))
    assert verdict.outcome is Outcome.FAIL
    assert any("3.00%" in reason and "30/1000" in reason and "1.00%" in reason for reason in verdict.reasons)
    assert any("significantly above base 0.00%" in reason for reason in verdict.reasons)


def test_error_rate_significantly_above_base_fails_below_the_absolute_bound() -> None:
    analysis = Analysis(gates=(Gate(Metric.ERROR_RATE, maximum=0.05, relative=0.05),))
    verdict = judge(analysis, window(Side(2000, 60, 20.0), Side(20000, 200, 20.0)))  # 3% vs 1%
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons == (verdict.reasons[0],) and "significantly above base 1.00%" in verdict.reasons[0]
    # the same rates on a handful of requests are no evidence
    assert judge(analysis, window(Side(60, 2, 20.0), Side(600, 6, 20.0))).outcome is Outcome.PASS


def test_p99_gates_absolute_and_relative() -> None:
    analysis = Analysis(gates=(Gate(Metric.P99_LATENCY, maximum=500.0, relative=1.2),))
    slow = judge(analysis, window(Side(500, 0, 95.0), Side(5000, 0, 15.0)))
    assert slow.outcome is Outcome.FAIL
    assert slow.reasons == ("gray p99 95.0 ms on * above 1.2 x base p99 15.0 ms (18.0 ms)",)
    very_slow = judge(analysis, window(Side(500, 0, 900.0), Side(5000, 0, 850.0)))
    assert very_slow.reasons == ("gray p99 900.0 ms on * above 500 ms",)
    assert judge(analysis, window(Side(500, 0, 17.0), Side(5000, 0, 15.0))).outcome is Outcome.PASS


def test_too_few_requests_is_inconclusive_never_a_pass() -> None:
    verdict = judge(DEFAULT, window(Side(3, 0, 10.0), Side(5000, 0, 10.0)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reasons == ("gray had 3 requests on * (at least 50 needed)",)
    assert judge(DEFAULT, {}).outcome is Outcome.INCONCLUSIVE  # no data at all
    # even a gray request that failed, alone, is not enough to judge
    assert judge(DEFAULT, window(Side(2, 1, 10.0), Side(5000, 0, 10.0))).outcome is Outcome.INCONCLUSIVE


def test_relative_gates_need_base_traffic() -> None:
    verdict = judge(DEFAULT, window(Side(500, 0, 10.0), Side(10, 0, 10.0)))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert any("base had 10 requests" in reason for reason in verdict.reasons)


def test_a_failure_wins_over_an_inconclusive_gate() -> None:
    verdict = judge(DEFAULT, window(Side(500, 100, None), Side(10, 0, None)))
    assert verdict.outcome is Outcome.FAIL


def test_a_named_resource_is_judged_on_its_own_numbers() -> None:
    analysis = Analysis(gates=(Gate(Metric.ERROR_RATE, resource="GET /orders/{id}", maximum=0.01),))
    healthy_rollup = Side(5000, 0, 10.0)
    verdict = judge(analysis, {ALL: (healthy_rollup, healthy_rollup), "GET /orders/{id}": (Side(400, 40, 10.0), Side(4000, 0, 10.0))})
    assert verdict.outcome is Outcome.FAIL
    assert "on GET /orders/{id}" in verdict.reasons[0]


def test_latency_test_fails_on_a_real_shift_only() -> None:
    analysis = Analysis(gates=(), latency_test=LatencyTest(alpha=0.01, min_shift_ms=20.0))
    base = Side(1000, 0, 10.0, {5.0: 200, 10.0: 700, 25.0: 100})
    slow = Side(1000, 0, 100.0, {75.0: 200, 100.0: 700, 250.0: 100})
    verdict = judge(analysis, window(slow, base))
    assert verdict.outcome is Outcome.FAIL
    assert "Hodges-Lehmann" in verdict.reasons[0]
    assert verdict.evidence["*.hodges_lehmann_ms"] == 90.0
    # a significant but small shift (one bucket for some requests) passes: below min_shift_ms
    nudged = Side(1000, 0, 10.0, {5.0: 150, 10.0: 700, 25.0: 150})
    assert judge(analysis, window(nudged, base)).outcome is Outcome.PASS
    assert judge(analysis, window(Side(10, 0, 1.0, {1.0: 10}), base)).outcome is Outcome.INCONCLUSIVE
