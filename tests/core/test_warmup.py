"""Warm-up factor curves pinned at chosen instants, the starvation guard, and per-instance weights."""

from __future__ import annotations

import math

import pytest

from tidegate.core.instance import Instance, InstanceState
from tidegate.core.warmup import WarmupSettings, WarmupWeights, is_full_rollout, warmup_factor, warmup_weighting

INSTANTS = (0, 1, 30, 60, 119, 120, 300)

# Hand-computed for a 120 s window. Floors: 1% in curve mode, 10% in slow-start mode.
QUADRATIC = (0.01, 0.01, 1 / 16, 1 / 4, 14161 / 14400, 1.0, 1.0)  # (t/120)^2; (1/120)^2 = 0.0000694 < 1%
LINEAR = (0.01, 0.01, 1 / 4, 1 / 2, 119 / 120, 1.0, 1.0)  # 1/120 = 0.00833 < 1%
ENVOY_AGGRESSION_1 = (0.1, 0.1, 1 / 4, 1 / 2, 119 / 120, 1.0, 1.0)
ENVOY_AGGRESSION_2 = (0.1, 0.1, 1 / 2, math.sqrt(1 / 2), math.sqrt(119 / 120), 1.0, 1.0)  # sqrt(1/120) = 0.0913 < 10%


@pytest.mark.parametrize(("age", "expected"), list(zip(INSTANTS, QUADRATIC)))
def test_default_curve_is_quadratic_with_a_one_percent_floor(age: float, expected: float) -> None:
    assert warmup_factor(age) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("age", "expected"), list(zip(INSTANTS, LINEAR)))
def test_curve_one_is_dubbos_linear_ramp(age: float, expected: float) -> None:
    assert warmup_factor(age, window_s=120, curve=1.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("age", "expected"), list(zip(INSTANTS, ENVOY_AGGRESSION_1)))
def test_slow_start_aggression_one_is_linear_from_ten_percent(age: float, expected: float) -> None:
    assert warmup_factor(age, window_s=120, aggression=1.0, min_weight_percent=10) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("age", "expected"), list(zip(INSTANTS, ENVOY_AGGRESSION_2)))
def test_slow_start_aggression_two_is_square_root(age: float, expected: float) -> None:
    assert warmup_factor(age, window_s=120, aggression=2.0, min_weight_percent=10) == pytest.approx(expected, rel=1e-12)


def test_slow_start_min_weight_defaults_to_envoys_ten_percent() -> None:
    assert warmup_factor(0, aggression=1.0) == 0.1


def test_slow_start_with_no_floor_counts_at_least_one_millisecond() -> None:
    assert warmup_factor(0, window_s=120, aggression=1.0, min_weight_percent=0) == pytest.approx(0.001 / 120, rel=1e-12)


@pytest.mark.parametrize("aggression", [0.0, -1.0, math.nan])
def test_invalid_aggression_is_taken_as_linear(aggression: float) -> None:
    assert warmup_factor(60, window_s=120, aggression=aggression) == 0.5


def test_factor_is_never_zero_even_without_a_floor() -> None:
    assert 0 < warmup_factor(0, min_weight_percent=0) < 1e-9


def test_negative_age_from_clock_skew_gets_the_floor() -> None:
    assert warmup_factor(-5) == 0.01


def test_zero_window_disables_warmup() -> None:
    assert warmup_factor(0, window_s=0) == 1.0


@pytest.mark.parametrize(
    ("ages", "threshold", "expected"),
    [
        ([0, 10, 200, 300], 0.5, False),  # exactly half warming: not more than the threshold
        ([0, 10, 20, 300], 0.5, True),  # three of four
        ([120, 121, 0, 5], 0.5, False),  # age == window is warm
        ([119.999, 121, 0, 5], 0.5, True),
        ([0], 0.5, True),  # a lone new instance
        ([300, 0], 0.0, True),  # threshold 0: any warming instance ends the ramp for all
        ([300, 400], 0.0, False),
        ([0, 0, 0], 1.0, False),  # threshold 1 never trips
        ([], 0.5, False),
    ],
)
def test_starvation_guard_at_the_threshold_edges(ages: list[float], threshold: float, expected: bool) -> None:
    assert is_full_rollout(ages, 120, threshold) is expected


def _instance(name: str, registered_at: float, weight: int = 100) -> Instance:
    return Instance(
        id=name, service="orders", host="127.0.0.1", port=1, weight=weight, registered_at=registered_at, state=InstanceState.WARMING
    )


def test_weights_ramp_a_new_instance_among_old_ones() -> None:
    old = [_instance(f"old{i}", 1000.0) for i in range(3)]
    new = _instance("new", 10_000.0, weight=50)
    weights = WarmupWeights([*old, new], WarmupSettings())
    now = 10_060.0
    assert weights.weight(old[0], now) == 100.0
    assert weights.weight(new, now) == pytest.approx(50 * 0.25, rel=1e-12)
    assert weights.weight_of(10_120.0)(new) == 50.0
    assert weights.warming(now) == 1


def test_unknown_registration_time_is_full_weight() -> None:
    weights = WarmupWeights([_instance("a", 0.0), _instance("b", 1.0)])
    assert weights.weight(_instance("a", 0.0), 2.0) == 100.0


def test_weights_switch_off_the_ramp_when_most_instances_are_warming() -> None:
    instances = [_instance("a", 1000.0), _instance("b", 1000.0), _instance("c", 1000.0), _instance("d", 1.0)]
    weights = WarmupWeights(instances, WarmupSettings(starvation_threshold=0.5))
    assert weights.full_rollout(1060.0)
    assert weights.weight(instances[0], 1060.0) == 100.0
    relaxed = WarmupWeights(instances, WarmupSettings(starvation_threshold=0.75))
    assert not relaxed.full_rollout(1060.0)
    assert relaxed.weight(instances[0], 1060.0) == pytest.approx(25.0, rel=1e-12)


def test_guard_follows_time_as_windows_end_one_by_one() -> None:
    instances = [_instance("a", 1000.0), _instance("b", 1050.0), _instance("c", 1.0), _instance("d", 1.0)]
    weights = WarmupWeights(instances, WarmupSettings(starvation_threshold=0.25))
    assert weights.full_rollout(1100.0)  # two of four warming
    assert not weights.full_rollout(1120.0)  # "a" is warm now; one of four is not more than 25%
    assert weights.weight(instances[1], 1120.0) == pytest.approx(100 * (70 / 120) ** 2, rel=1e-12)


def test_settings_in_slow_start_mode() -> None:
    weights = WarmupWeights(
        [_instance("a", 100.0), _instance("b", 1.0), _instance("c", 1.0)],
        WarmupSettings(window_s=60, aggression=2.0, min_weight_percent=10),
    )
    assert weights.weight(_instance("a", 100.0), 115.0) == pytest.approx(100 * math.sqrt(15 / 60), rel=1e-12)


def test_router_weighting_reads_the_injected_clock() -> None:
    now = [1060.0]
    weighting = warmup_weighting(lambda service: WarmupSettings(starvation_threshold=1.0), lambda: now[0])
    instances = [_instance("a", 1000.0), _instance("b", 1.0)]
    weight_of = weighting(instances)
    assert weight_of(instances[0]) == pytest.approx(25.0, rel=1e-12)
    now[0] = 1120.0
    assert weight_of(instances[0]) == 100.0
    assert WarmupWeights(instances).all_warm_at == 1120.0


def test_router_weighting_uses_each_services_settings() -> None:
    asked: list[str] = []

    def settings_of(service: str) -> WarmupSettings:
        asked.append(service)
        return WarmupSettings(window_s=0)

    weight_of = warmup_weighting(settings_of, lambda: 1001.0)([_instance("a", 1000.0)])
    assert asked == ["orders"]
    assert weight_of(_instance("a", 1000.0)) == 100.0
    assert warmup_weighting(settings_of, lambda: 0.0)([])(_instance("a", 1000.0)) == 100.0


def test_a_warming_instance_gets_its_share_from_the_real_balancer() -> None:
    import random

    from tidegate.core.balancer import P2CBalancer

    instances = [_instance(f"old{i}", 1000.0) for i in range(3)] + [_instance("new", 10_000.0)]
    weights = WarmupWeights(instances)
    balancer = P2CBalancer(instances, random=random.Random(5).random, weight_of=weights.weight_of(10_060.0))
    picks = [balancer.pick() for _ in range(20_000)]
    share = sum(1 for p in picks if p is not None and p.id == "new") / len(picks)
    assert share == pytest.approx(25 / 325, abs=0.01)  # weight 25 (a quarter in) against 3 x 100
