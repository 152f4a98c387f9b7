"""Mann-Whitney U, Hodges-Lehmann, the two-proportion test and the reservoir, against scipy and by hand."""

from __future__ import annotations

import random
import statistics

import pytest
from scipy.stats import mannwhitneyu

from tidegate.core.rollout.stats import Reservoir, grouped, hodges_lehmann, mann_whitney_u, normal_sf, two_proportions


def test_mann_whitney_matches_scipy_with_and_without_ties() -> None:
    draw = random.Random(17)
    for _ in range(300):
        x = [draw.choice([1.0, 2.0, 3.0, 4.5, draw.random()]) for _ in range(draw.randint(2, 80))]
        y = [draw.choice([1.0, 2.0, 3.0, draw.random() + 0.3]) for _ in range(draw.randint(2, 80))]
        if len(set(x + y)) == 1:
            continue
        ours = mann_whitney_u(grouped(x), grouped(y))
        for alternative, p in (("two-sided", ours.p_two_sided), ("greater", ours.p_greater), ("less", ours.p_less)):
            theirs = mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
            assert ours.u == pytest.approx(float(theirs.statistic), abs=1e-9)
            assert p == pytest.approx(float(theirs.pvalue), rel=1e-9, abs=1e-12)


def test_mann_whitney_on_histograms_is_the_test_on_the_expanded_samples() -> None:
    gray = {5.0: 10, 10.0: 300, 25.0: 90}
    base = {5.0: 40, 10.0: 500, 25.0: 20}
    ours = mann_whitney_u(gray, base)
    theirs = mannwhitneyu(
        [v for v, n in gray.items() for _ in range(n)], [v for v, n in base.items() for _ in range(n)], alternative="greater"
    )
    assert ours.p_greater == pytest.approx(float(theirs.pvalue), rel=1e-9)
    assert ours.p_greater < 1e-6  # gray sits in the slower buckets


def test_mann_whitney_of_identical_values_finds_nothing() -> None:
    result = mann_whitney_u({3.0: 50}, {3.0: 70})
    assert (result.p_two_sided, result.p_greater, result.p_less) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        mann_whitney_u({}, {1.0: 1})


def test_hodges_lehmann_is_the_median_of_pairwise_differences() -> None:
    draw = random.Random(3)
    for _ in range(300):
        x = [draw.choice([1.0, 2.0, 5.0, round(draw.uniform(-5, 5), 2)]) for _ in range(draw.randint(1, 40))]
        y = [draw.choice([0.0, 2.0, round(draw.uniform(-5, 5), 3)]) for _ in range(draw.randint(1, 40))]
        expected = statistics.median(a - b for a in x for b in y)
        assert hodges_lehmann(grouped(x), grouped(y)) == pytest.approx(expected, abs=1e-9)


def test_hodges_lehmann_finds_a_shift_at_the_sample_cap() -> None:
    draw = random.Random(5)
    x = [draw.gauss(100.0, 10.0) for _ in range(2000)]
    y = [draw.gauss(20.0, 10.0) for _ in range(2000)]
    assert hodges_lehmann(grouped(x), grouped(y)) == pytest.approx(80.0, abs=1.5)


def test_two_proportions_one_sided() -> None:
    # 3% of 1000 against 1% of 1000: z = 0.02 / sqrt(0.02 * 0.98 * 0.002) = 3.194
    test = two_proportions(30, 1000, 10, 1000)
    assert test.z == pytest.approx(3.1944, abs=1e-3)
    assert test.p_greater == pytest.approx(normal_sf(test.z))
    assert test.p_greater < 0.001
    assert two_proportions(10, 1000, 30, 1000).p_greater > 0.99
    assert two_proportions(0, 50, 0, 900).p_greater == 1.0  # no errors anywhere: no evidence


def test_normal_sf_textbook_values() -> None:
    assert normal_sf(0.0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert normal_sf(-1.644854) == pytest.approx(0.95, abs=1e-6)


def test_reservoir_is_bounded_and_uniform() -> None:
    draw = random.Random(11)
    reservoir = Reservoir(capacity=100)
    for value in range(10_000):
        reservoir.offer(float(value), draw.randrange)
    assert reservoir.seen == 10_000
    assert len(reservoir.values) == 100
    assert sum(reservoir.sample().values()) == 100
    # a uniform sample of 0..9999 has its mean near 5000 (sd of the mean ~290)
    assert 3800 < statistics.fmean(reservoir.values) < 6200
    with pytest.raises(ValueError):
        Reservoir(0)
