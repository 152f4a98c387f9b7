"""Load balancing: pick one instance of a service for the next call.

Two balancers share one interface (`Balancer`):

- `P2CBalancer` (the default): power of two choices, least in flight. Two
  candidates are drawn in proportion to their weights and the one with the
  lower in-flight/weight wins; a tie goes to the first drawn, so with no
  load the share of each instance is exactly proportional to its weight.
- `RoundRobinBalancer`: smooth weighted round robin (nginx's algorithm):
  exact weighted shares, spread evenly, blind to load.

A balancer is built for one snapshot of a service's routable instances and
thrown away when the directory changes; the requests in flight per instance
live in an `InFlight` that outlives the rebuilds. Randomness comes in as a
callable returning floats in [0, 1) (`random.Random(seed).random`), and
weights through `weight_of`, so warm-up can scale a new instance's weight
without this module knowing about time.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from itertools import accumulate
from typing import Protocol

from tidegate.core.instance import Instance

#: The weight a balancer gives an instance; warm-up plugs in here.
WeightOf = Callable[[Instance], float]
#: A source of floats in [0, 1).
RandomFloat = Callable[[], float]


def registered_weight(instance: Instance) -> float:
    """The weight the instance registered with."""
    return float(instance.weight)


class InFlight:
    """Calls in flight per instance id, kept across balancer rebuilds.

    Increments come from many threads at once (a WSGI server's workers), so
    they take a lock: a lost update would skew least-in-flight for good.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def acquire(self, instance_id: str) -> None:
        with self._lock:
            self._counts[instance_id] = self._counts.get(instance_id, 0) + 1

    def release(self, instance_id: str) -> None:
        with self._lock:
            left = self._counts.get(instance_id, 0) - 1
            if left > 0:
                self._counts[instance_id] = left
            else:
                self._counts.pop(instance_id, None)

    def count(self, instance_id: str) -> int:
        return self._counts.get(instance_id, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


class Balancer(Protocol):
    """Picks among one snapshot of routable instances."""

    instances: tuple[Instance, ...]

    def pick(self, exclude: Collection[str] = ()) -> Instance | None:
        """One instance whose id is not in `exclude`; None when none is left."""

    def acquire(self, instance: Instance) -> None:
        """Count a call to `instance` as in flight."""

    def release(self, instance: Instance) -> None:
        """The call counted by `acquire` has ended."""

    def reweigh(self) -> None:
        """Ask `weight_of` again (warm-up weights change over time)."""


#: Builds a balancer for a snapshot: (instances, in_flight, random, weight_of).
BalancerFactory = Callable[[Sequence[Instance], InFlight, RandomFloat, WeightOf], Balancer]


def _weights(instances: Sequence[Instance], weight_of: WeightOf) -> list[float]:
    """Weights for picking; when none is positive all count as equal, since
    serving from a zero-weight instance beats failing a call that has one."""
    weights = [max(0.0, float(weight_of(i))) for i in instances]
    if not any(w > 0 for w in weights):
        return [1.0] * len(instances)
    return weights


class _CountsInFlight:
    """What every balancer does alike: count the calls in flight on the `InFlight` it was given."""

    _in_flight: InFlight

    def acquire(self, instance: Instance) -> None:
        self._in_flight.acquire(instance.id)

    def release(self, instance: Instance) -> None:
        self._in_flight.release(instance.id)


class P2CBalancer(_CountsInFlight):
    """Power of two choices, least in flight relative to weight."""

    def __init__(
        self,
        instances: Sequence[Instance],
        in_flight: InFlight | None = None,
        random: RandomFloat | None = None,
        weight_of: WeightOf = registered_weight,
    ) -> None:
        if random is None:
            raise ValueError("P2CBalancer: random is required (pass random.Random().random)")
        self.instances = tuple(instances)
        self._in_flight = in_flight if in_flight is not None else InFlight()
        self._random = random
        self._weight_of = weight_of
        self.reweigh()

    def reweigh(self) -> None:
        weights = _weights(self.instances, self._weight_of)
        # Swapped in one assignment so a concurrent pick sees old or new, never half.
        self._table = (weights, list(accumulate(weights)))

    def pick(self, exclude: Collection[str] = ()) -> Instance | None:
        instances = self.instances
        weights, cumulative = self._table
        if exclude:
            kept = [k for k, i in enumerate(instances) if i.id not in exclude]
            if len(kept) < len(instances):
                instances = tuple(instances[k] for k in kept)
                weights = _weights(instances, self._weight_of) if kept else []
                cumulative = list(accumulate(weights))
        count = len(instances)
        if count == 0:
            return None
        if count == 1:
            return instances[0]
        total = cumulative[-1]
        first = min(bisect_right(cumulative, self._random() * total), count - 1)
        # The second is drawn among the others: skip over the first's stretch of the line.
        first_weight = weights[first]
        draw = self._random() * (total - first_weight)
        if draw >= cumulative[first] - first_weight:
            draw += first_weight
        second = min(bisect_right(cumulative, draw), count - 1)
        if second == first or weights[second] <= 0:
            return instances[first]
        a, b = instances[first], instances[second]
        count_of = self._in_flight.count
        # in_flight(b)/w(b) < in_flight(a)/w(a), multiplied out to avoid dividing.
        if count_of(b.id) * first_weight < count_of(a.id) * weights[second]:
            return b
        return a


class RoundRobinBalancer(_CountsInFlight):
    """Smooth weighted round robin, as nginx does it.

    Every pick adds each instance's weight to its running score, takes the
    highest, and takes the total off the winner. Over any run of
    sum(weights) picks each instance gets exactly its weight, interleaved
    (5,1,1 gives a a b a c a a, not a a a a a b c). The instances start in a
    random rotation so that consumers booted together do not all call the
    same instance first.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        in_flight: InFlight | None = None,
        random: RandomFloat | None = None,
        weight_of: WeightOf = registered_weight,
    ) -> None:
        ordered = tuple(instances)
        if random is not None and ordered:
            start = min(int(random() * len(ordered)), len(ordered) - 1)
            ordered = ordered[start:] + ordered[:start]
        self.instances = ordered
        self._in_flight = in_flight if in_flight is not None else InFlight()
        self._weight_of = weight_of
        self._lock = threading.Lock()  # the running scores are read-modify-write
        self._scores = [0.0] * len(ordered)
        self.reweigh()

    def reweigh(self) -> None:
        self._weights = _weights(self.instances, self._weight_of)

    def pick(self, exclude: Collection[str] = ()) -> Instance | None:
        instances = self.instances
        weights = self._weights
        with self._lock:
            scores = self._scores
            best = -1
            total = 0.0
            for k, weight in enumerate(weights):
                if exclude and instances[k].id in exclude:
                    continue
                scores[k] += weight
                total += weight
                if best < 0 or scores[k] > scores[best]:
                    best = k
            if best < 0:
                return None
            scores[best] -= total
        return instances[best]


#: The balancer the agent uses unless told otherwise (bench/balancer.py says why).
DEFAULT_BALANCER: BalancerFactory = P2CBalancer
