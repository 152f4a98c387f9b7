"""Two-sample statistics for judging gray against base: Mann-Whitney U, Hodges-Lehmann, two proportions.

Pure Python, no numpy: the control plane judges a window in a few milliseconds.
Samples are *grouped* (value -> count), so a latency histogram (bucket -> count)
and raw samples are judged by one code path, and ties (every request in one
bucket) are handled exactly by the tie correction. Raw samples are bounded before
they get here: `Reservoir` keeps a uniform sample of at most `SAMPLE_CAP` values
per side, so a window's cost does not grow with its traffic.

`mann_whitney_u` is the normal approximation with tie and continuity correction,
what `scipy.stats.mannwhitneyu(x, y, method="asymptotic")` computes (the tests
compare the two); it is a fair approximation from about 8 values per side, and the
judge asks for far more.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

#: Values a Reservoir keeps at most per side (the Hodges-Lehmann estimate costs
#: O(distinct values x log) per bisection step, so 2,000 a side stays in milliseconds).
SAMPLE_CAP = 2000

Grouped = Mapping[float, int]  # value -> how many times it was seen


def grouped(values: Iterable[float]) -> dict[float, int]:
    """Raw values as a grouped sample."""
    return dict(Counter(float(value) for value in values))


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class MannWhitney:
    """U of the first sample (x), its z, and the p-values of the three alternatives.

    `p_greater` is small when x tends to be larger than y (gray slower than base)."""

    u: float
    n_x: int
    n_y: int
    p_two_sided: float
    p_greater: float
    p_less: float


def mann_whitney_u(x: Grouped, y: Grouped, *, continuity: bool = True) -> MannWhitney:
    """Mann-Whitney U test of grouped samples x and y (normal approximation, tie-corrected)."""
    n_x = sum(x.values())
    n_y = sum(y.values())
    if n_x <= 0 or n_y <= 0:
        raise ValueError("both samples need at least one value")
    n = n_x + n_y
    rank_sum_x = 0.0
    ties = 0.0
    below = 0  # values ranked before the current one
    for value in sorted(set(x) | set(y)):
        in_x = x.get(value, 0)
        count = in_x + y.get(value, 0)
        rank_sum_x += in_x * (below + (count + 1) / 2.0)  # each tied value takes the mean of their ranks
        ties += count**3 - count
        below += count
    u_x = rank_sum_x - n_x * (n_x + 1) / 2.0
    u_y = n_x * n_y - u_x
    mean = n_x * n_y / 2.0
    variance = n_x * n_y / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0.0:  # every value equal: nothing tells the samples apart
        return MannWhitney(u_x, n_x, n_y, 1.0, 1.0, 1.0)
    sd = math.sqrt(variance)
    shift = 0.5 if continuity else 0.0

    def p(u: float, sides: float) -> float:
        return min(1.0, max(0.0, sides * normal_sf((u - mean - shift) / sd)))

    return MannWhitney(u_x, n_x, n_y, p(max(u_x, u_y), 2.0), p(u_x, 1.0), p(u_y, 1.0))


def hodges_lehmann(x: Grouped, y: Grouped) -> float:
    """The Hodges-Lehmann shift of x against y: the median of every difference x_i - y_j.

    Found by bisecting on the value of the difference (counting the pairs at or below
    a value is one merge-like pass), never by listing the n_x * n_y differences."""
    xs = sorted(value for value, count in x.items() if count > 0)
    ys = sorted(value for value, count in y.items() if count > 0)
    if not xs or not ys:
        raise ValueError("both samples need at least one value")
    x_counts = [x[value] for value in xs]
    y_counts = [y[value] for value in ys]
    y_above = [0] * (len(ys) + 1)  # y_above[j]: how many y values are at index j or later
    for j in range(len(ys) - 1, -1, -1):
        y_above[j] = y_above[j + 1] + y_counts[j]
    pairs = sum(x_counts) * y_above[0]

    def at_most(d: float) -> int:
        """Pairs with x - y <= d, i.e. y >= x - d."""
        total = 0
        j = 0
        for value, count in zip(xs, x_counts):
            limit = value - d
            while j < len(ys) and ys[j] < limit:
                j += 1
            total += count * y_above[j]
        return total

    def largest_at_most(d: float) -> float:
        return max((value - ys[j] for value in xs if (j := bisect_left(ys, value - d)) < len(ys)), default=-math.inf)

    def smallest_above(d: float) -> float:
        # for each x, the largest y below x - d gives its smallest difference above d
        return min((value - ys[j - 1] for value in xs if (j := bisect_left(ys, value - d)) > 0 and value - ys[j - 1] > d), default=math.inf)

    def kth(k: int) -> float:
        low = xs[0] - ys[-1]
        if at_most(low) >= k:
            return low
        high = xs[-1] - ys[0]
        # invariant: fewer than k pairs at or below `low`, at least k at or below `high`
        while True:
            answer = largest_at_most(high)
            if answer == smallest_above(low):  # one distinct difference left in (low, high]
                return answer
            middle = low + (high - low) / 2.0
            if not low < middle < high:
                return answer
            if at_most(middle) >= k:
                high = middle
            else:
                low = middle

    if pairs % 2:
        return kth(pairs // 2 + 1)
    return (kth(pairs // 2) + kth(pairs // 2 + 1)) / 2.0


@dataclass(frozen=True, slots=True)
class TwoProportions:
    """One-sided two-proportion z test: is the first rate above the second?"""

    rate_a: float
    rate_b: float
    z: float
    p_greater: float


def two_proportions(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> TwoProportions:
    """Pooled two-proportion z test of H1: rate a > rate b (a = gray's errors, b = base's)."""
    if trials_a <= 0 or trials_b <= 0:
        raise ValueError("both sides need at least one trial")
    rate_a = successes_a / trials_a
    rate_b = successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b))
    if spread == 0.0:  # no errors on either side, or nothing but errors: no difference to see
        return TwoProportions(rate_a, rate_b, 0.0, 1.0 if rate_a <= rate_b else 0.0)
    z = (rate_a - rate_b) / spread
    return TwoProportions(rate_a, rate_b, z, normal_sf(z))


class Reservoir:
    """A uniform sample of at most `capacity` of the values offered (Vitter's algorithm R).

    `draw(n)` returns a uniform integer in [0, n): the caller's randomness, so tests pin it."""

    __slots__ = ("capacity", "seen", "values")

    def __init__(self, capacity: int = SAMPLE_CAP) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.seen = 0
        self.values: list[float] = []

    def offer(self, value: float, draw: Callable[[int], int]) -> None:
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = draw(self.seen)
        if slot < self.capacity:
            self.values[slot] = value

    def sample(self) -> dict[float, int]:
        return grouped(self.values)
