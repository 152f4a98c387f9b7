"""Balancers: exact behaviour with seeded randomness and fixed sequences."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tidegate.core.balancer import InFlight, P2CBalancer, RoundRobinBalancer
from tidegate.core.instance import Instance


def instance(name: str, weight: int = 100) -> Instance:
    return Instance(id=name, service="orders", host="127.0.0.1", port=8000, weight=weight)


def fixed(values: list[float]) -> Callable[[], float]:
    """A 'random' source that replays `values` in a loop."""
    stream: Iterator[float] = iter(values * 1000)
    return lambda: next(stream)


def shares(balancer: object, picks: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        chosen = balancer.pick()  # type: ignore[attr-defined]
        assert chosen is not None
        counts[chosen.id] += 1
    return counts


def binomial_slack(picks: int, p: float) -> float:
    """Five standard deviations: a seeded run is deterministic, and this bound
    is what a correct sampler stays within for any seed."""
    return 5 * math.sqrt(picks * p * (1 - p))


# -- smooth weighted round robin -------------------------------------------------


def test_round_robin_gives_exact_weighted_shares_interleaved() -> None:
    balancer = RoundRobinBalancer([instance("a", 5), instance("b", 1), instance("c", 1)])
    sequence = [balancer.pick().id for _ in range(7)]  # type: ignore[union-attr]
    assert sequence == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented order
    assert Counter(balancer.pick().id for _ in range(700)) == {"a": 500, "b": 100, "c": 100}  # type: ignore[union-attr]


def test_round_robin_equal_weights_cycle() -> None:
    balancer = RoundRobinBalancer([instance("a"), instance("b"), instance("c")])
    assert [balancer.pick().id for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]  # type: ignore[union-attr]


def test_round_robin_random_start_rotates_order() -> None:
    balancer = RoundRobinBalancer([instance("a"), instance("b"), instance("c")], random=fixed([0.5]))
    assert [balancer.pick().id for _ in range(3)] == ["b", "c", "a"]  # type: ignore[union-attr]


def test_round_robin_exclusion_skips_and_keeps_the_others_spread() -> None:
    balancer = RoundRobinBalancer([instance("a"), instance("b"), instance("c")])
    picks = [balancer.pick(exclude={"b"}).id for _ in range(6)]  # type: ignore[union-attr]
    assert "b" not in picks
    assert Counter(picks) == {"a": 3, "c": 3}
    assert balancer.pick(exclude={"a", "b", "c"}) is None


def test_round_robin_empty_and_zero_weights() -> None:
    assert RoundRobinBalancer([]).pick() is None
    only_zero = RoundRobinBalancer([instance("a", 0), instance("b", 0)])
    assert Counter(only_zero.pick().id for _ in range(4)) == {"a": 2, "b": 2}  # type: ignore[union-attr]
    one_zero = RoundRobinBalancer([instance("a", 0), instance("b", 10)])
    assert {one_zero.pick().id for _ in range(10)} == {"b"}  # type: ignore[union-attr]


def test_round_robin_reweigh_asks_weight_of_again() -> None:
    factor = {"a": 1.0, "b": 1.0}
    balancer = RoundRobinBalancer([instance("a"), instance("b")], weight_of=lambda i: 100 * factor[i.id])
    assert Counter(balancer.pick().id for _ in range(10)) == {"a": 5, "b": 5}  # type: ignore[union-attr]
    factor["b"] = 0.25  # b is warming up again
    balancer.reweigh()
    assert Counter(balancer.pick().id for _ in range(50)) == {"a": 40, "b": 10}  # type: ignore[union-attr]


# -- power of two choices ----------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_p2c_without_load_shares_by_weight(seed: int) -> None:
    weights = {"a": 100, "b": 200, "c": 700}
    balancer = P2CBalancer([instance(k, w) for k, w in weights.items()], random=random.Random(seed).random)
    picks = 20_000
    counts = shares(balancer, picks)
    for name, weight in weights.items():
        p = weight / 1000
        assert abs(counts[name] - picks * p) <= binomial_slack(picks, p), (name, counts)


def test_p2c_equal_weights_spread_evenly() -> None:
    balancer = P2CBalancer([instance(str(k)) for k in range(10)], random=random.Random(7).random)
    counts = shares(balancer, 10_000)
    assert set(counts) == {str(k) for k in range(10)}
    for name in counts:
        assert abs(counts[name] - 1000) <= binomial_slack(10_000, 0.1)


def test_p2c_prefers_the_less_loaded() -> None:
    in_flight = InFlight()
    a, b = instance("a"), instance("b")
    balancer = P2CBalancer([a, b], in_flight, random.Random(3).random)
    for _ in range(3):
        balancer.acquire(a)
    # With two instances both are always the candidates: b wins every time.
    assert {balancer.pick().id for _ in range(100)} == {"b"}  # type: ignore[union-attr]
    for _ in range(3):
        balancer.release(a)
    assert {balancer.pick().id for _ in range(100)} == {"a", "b"}  # type: ignore[union-attr]


def test_p2c_compares_in_flight_relative_to_weight() -> None:
    in_flight = InFlight()
    heavy, light = instance("heavy", 400), instance("light", 100)
    balancer = P2CBalancer([heavy, light], in_flight, random.Random(5).random)
    for _ in range(3):
        balancer.acquire(heavy)  # 3/400 < 1/100
    balancer.acquire(light)
    assert {balancer.pick().id for _ in range(100)} == {"heavy"}  # type: ignore[union-attr]
    balancer.acquire(heavy)
    balancer.acquire(heavy)  # 5/400 > 1/100
    assert {balancer.pick().id for _ in range(100)} == {"light"}  # type: ignore[union-attr]


def test_p2c_draws_two_distinct_candidates_from_a_fixed_sequence() -> None:
    in_flight = InFlight()
    instances = [instance("a"), instance("b"), instance("c"), instance("d")]
    balancer = P2CBalancer(instances, in_flight, fixed([0.30, 0.30]))
    # First draw 0.30*400=120 -> b; second 0.30*300=90 on the line without b -> a.
    assert balancer.pick().id == "b"  # type: ignore[union-attr]  # tie: the first drawn wins
    balancer.acquire(instances[1])
    assert balancer.pick().id == "a"  # type: ignore[union-attr]  # b is busier


def test_p2c_exclusion_never_returns_excluded() -> None:
    instances = [instance("a"), instance("b"), instance("c")]
    balancer = P2CBalancer(instances, random=random.Random(11).random)
    assert {balancer.pick(exclude={"a"}).id for _ in range(300)} == {"b", "c"}  # type: ignore[union-attr]
    assert {balancer.pick(exclude={"a", "c"}).id for _ in range(10)} == {"b"}  # type: ignore[union-attr]
    assert balancer.pick(exclude={"a", "b", "c"}) is None
    assert P2CBalancer([], random=random.Random(1).random).pick() is None


def test_p2c_zero_weight_instance_gets_nothing_while_others_have_weight() -> None:
    balancer = P2CBalancer([instance("a", 0), instance("b"), instance("c")], random=random.Random(2).random)
    assert "a" not in shares(balancer, 2000)
    all_zero = P2CBalancer([instance("a", 0), instance("b", 0)], random=random.Random(2).random)
    assert set(shares(all_zero, 200)) == {"a", "b"}


def test_p2c_weight_of_scales_shares_and_reweigh_applies_it() -> None:
    factor = {"old": 1.0, "new": 0.1}
    balancer = P2CBalancer([instance("old"), instance("new")], random=random.Random(9).random, weight_of=lambda i: 100 * factor[i.id])
    picks = 11_000
    counts = shares(balancer, picks)
    assert abs(counts["new"] - picks / 11) <= binomial_slack(picks, 1 / 11)
    factor["new"] = 1.0
    balancer.reweigh()
    counts = shares(balancer, picks)
    assert abs(counts["new"] - picks / 2) <= binomial_slack(picks, 0.5)


def test_p2c_requires_a_random_source() -> None:
    with pytest.raises(ValueError, match="random"):
        P2CBalancer([instance("a")])


# -- in-flight tracking ---------------------------------------------------------------


def test_in_flight_counts_survive_a_rebuild() -> None:
    in_flight = InFlight()
    a = instance("a")
    first = P2CBalancer([a, instance("b")], in_flight, random.Random(1).random)
    first.acquire(a)
    first.acquire(a)
    rebuilt = P2CBalancer([a, instance("b"), instance("c")], in_flight, random.Random(1).random)
    assert in_flight.count("a") == 2
    rebuilt.release(a)
    rebuilt.release(a)
    assert in_flight.count("a") == 0
    rebuilt.release(a)  # an extra release never goes negative
    assert in_flight.count("a") == 0
    assert in_flight.snapshot() == {}
