"""Warm-up weights: consumers ramp a newly registered instance's share of traffic.

An instance's age is `now - Instance.registered_at` (0 = unknown: no ramp).
Within the window, its weight is multiplied by a factor in (0, 1]:

- curve mode (default; `aggression` None): `max(floor, (age/window) ** curve)`,
  floor = `min_weight_percent`/100, default 1%. Curve 2 (the default) is
  quadratic: slow first, as a cold JIT-less Python process needs. Curve 1 is
  Dubbo's linear `weight * uptime / warmup, at least 1` (for weight 100) except
  that the weight is not truncated to an integer and an age of exactly 0 gets
  the floor (Dubbo gives full weight at uptime 0, a quirk not reproduced).
- slow-start mode (`aggression` set, as Envoy's slow_start_config):
  `max(min_weight_percent/100, time_factor ** (1/aggression))` with
  `time_factor = max(age, 1 ms) / window`, min_weight_percent default 10.
  Aggression 1 is linear; above 1 ramps fast first; an aggression <= 0 or NaN
  is taken as 1, as Envoy does.

At `age >= window` (or with a window of 0) the factor is exactly 1.

Starvation guard: when more than `starvation_threshold` of the instances are
warming at once (a whole deployment rolled, or everyone re-registered after a
control-plane restart), ramping would only overload the old few, so all are
treated as warm.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tidegate.core.instance import Instance

Clock = Callable[[], float]  # epoch seconds, e.g. time.time
WeightOf = Callable[[Instance], float]

DEFAULT_WINDOW_S = 120.0
DEFAULT_CURVE = 2.0
CURVE_MIN_WEIGHT_PERCENT = 1.0
SLOW_START_MIN_WEIGHT_PERCENT = 10.0
DEFAULT_STARVATION_THRESHOLD = 0.5
_MIN_AGE_S = 0.001  # Envoy measures ages in whole milliseconds, at least 1


def warmup_factor(
    age_s: float,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    curve: float = DEFAULT_CURVE,
    aggression: float | None = None,
    min_weight_percent: float | None = None,
) -> float:
    """The share of its weight an instance of age `age_s` gets, in (0, 1]."""
    if window_s <= 0 or age_s >= window_s:
        return 1.0
    time_factor = max(age_s, _MIN_AGE_S) / window_s
    ramp: float  # a positive base to a real power: a float (typeshed says Any, as a negative base gives a complex)
    if aggression is None:
        floor = CURVE_MIN_WEIGHT_PERCENT if min_weight_percent is None else min_weight_percent
        ramp = time_factor**curve
    else:
        floor = SLOW_START_MIN_WEIGHT_PERCENT if min_weight_percent is None else min_weight_percent
        if aggression <= 0 or math.isnan(aggression):
            aggression = 1.0
        ramp = time_factor if aggression == 1.0 else time_factor ** (1.0 / aggression)
    return min(1.0, max(floor / 100.0, ramp))


def is_full_rollout(ages: Iterable[float], window_s: float, threshold: float = DEFAULT_STARVATION_THRESHOLD) -> bool:
    """True when more than `threshold` of the instances (by their ages) are still warming."""
    total = 0
    warming = 0
    for age in ages:
        total += 1
        warming += age < window_s
    return total > 0 and warming > threshold * total


@dataclass(frozen=True, slots=True)
class WarmupSettings:
    """A service's warm-up knobs (from `ServiceSettings`); see the module docstring."""

    window_s: float = DEFAULT_WINDOW_S
    curve: float = DEFAULT_CURVE
    aggression: float | None = None
    min_weight_percent: float | None = None
    starvation_threshold: float = DEFAULT_STARVATION_THRESHOLD

    def factor(self, age_s: float) -> float:
        return warmup_factor(
            age_s,
            window_s=self.window_s,
            curve=self.curve,
            aggression=self.aggression,
            min_weight_percent=self.min_weight_percent,
        )


class WarmupWeights:
    """Effective weights of one service's routable instances.

    Build one per directory change (O(n log n)); `weight(instance, now)` is
    then O(1) once every instance is past its window (one comparison), and
    otherwise one bisect over the window ends (O(log n)) plus one power."""

    __slots__ = ("settings", "_ends", "_all_warm_at", "_total")

    def __init__(self, instances: Iterable[Instance], settings: WarmupSettings = WarmupSettings()) -> None:
        self.settings = settings
        window = settings.window_s
        members = tuple(instances)
        self._total = len(members)
        self._ends = sorted(i.registered_at + window for i in members if i.registered_at > 0) if window > 0 else []
        self._all_warm_at = self._ends[-1] if self._ends else -math.inf

    def warming(self, now: float) -> int:
        """How many instances are still inside their window at `now`."""
        return len(self._ends) - bisect.bisect_right(self._ends, now)

    def full_rollout(self, now: float) -> bool:
        """The starvation guard: too many warming at once, so none is ramped."""
        return self.warming(now) > self.settings.starvation_threshold * self._total

    def weight(self, instance: Instance, now: float) -> float:
        """`instance.weight` times its warm-up factor at `now` (epoch seconds)."""
        if now >= self._all_warm_at or instance.registered_at <= 0:
            return float(instance.weight)
        age = now - instance.registered_at
        if age >= self.settings.window_s or self.full_rollout(now):
            return float(instance.weight)
        return instance.weight * self.settings.factor(age)

    @property
    def all_warm_at(self) -> float:
        """When the last window ends (-inf when none): after it, no reweighing is needed."""
        return self._all_warm_at

    def weight_of(self, now: float) -> WeightOf:
        """The balancer's `weight_of`, fixed at `now`."""
        return lambda instance: self.weight(instance, now)

    def clocked(self, clock: Clock) -> WeightOf:
        """The balancer's `weight_of`, reading `clock()` at every call (each reweigh sees the time of then)."""
        return lambda instance: self.weight(instance, clock())


def warmup_weighting(settings_of: Callable[[str], WarmupSettings], clock: Clock) -> Callable[[Sequence[Instance]], WeightOf]:
    """The outbound router's `weighting`: for each snapshot of a service's
    routable instances, their `WarmupWeights` under that service's settings,
    read at `clock()`. The router's `reweigh()` then moves weights along the ramp."""

    def weighting(instances: Sequence[Instance]) -> WeightOf:
        if not instances:
            return lambda instance: float(instance.weight)
        return WarmupWeights(instances, settings_of(instances[0].service)).clocked(clock)

    return weighting
