"""The metrics the control plane keeps: agents' pushed summaries in downsampled ring buffers.

Pure: no I/O, no clock of its own (every call takes `now`, wall-clock seconds), so
its arithmetic is tested exactly. One *series* is (service, tag, resource); an
instance's push adds into the series of its service and tag, and into that pair's
rollup (resource `ALL`, the sum of its inbound rows), so a service's chart is one
series read, not fifty summed per query.

Each series holds three rings (`RESOLUTIONS`: 1 s x 5 min, 10 s x 1 h, 1 min x 24 h)
of fixed slots in `array('f')`: `FIELDS` counters per slot (passed, blocked, errors,
RT count and sum, then the latency histogram on the agent's buckets), about 170 KB a
series, allocated when the series is first written. A slot remembers which period it
holds, so a slot from a lapped period reads as empty and is zeroed when written. The
number of series is capped (`max_series`): a push naming a new series past the cap is
counted in `dropped`, never stored, and what is stored stays. A push's counts land in
the period of `now` (its arrival), so the finest resolution a chart shows is the
agents' push interval.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import isfinite
from operator import add
from typing import Any

#: The agent's latency bucket bounds in seconds (tidegate.agent.metrics.BUCKETS), plus +Inf.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
PASSED, BLOCKED, ERRORS, RT_COUNT, RT_SUM = range(5)
HIST = 5
FIELDS = HIST + len(BUCKETS) + 1
#: (seconds per slot, slots): 1 s x 5 min, 10 s x 1 h, 1 min x 24 h.
RESOLUTIONS: tuple[tuple[int, int], ...] = ((1, 300), (10, 360), (60, 1440))
#: The resource name of a (service, tag)'s rollup series.
ALL = "*"
#: Series kept at most (about 170 KB each): 1,500 is about 250 MB.
MAX_SERIES = 1500
#: Points one query may return (a 24 h chart at 1 min is 1,440).
MAX_POINTS = 2000
#: Row kinds a push carries: inbound requests (rolled up), governed resources, outbound calls.
ROW_KINDS = ("in", "res", "out")
#: Distinct block kinds remembered per series (their totals; more fold into "other").
MAX_BLOCK_KINDS = 8


class MetricsError(ValueError):
    """A push or a query the store refuses; `field` names what was wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Ring:
    """`slots` slots of `seconds` each; a slot holds the period it was last written for."""

    __slots__ = ("seconds", "slots", "data", "periods")

    def __init__(self, seconds: int, slots: int) -> None:
        self.seconds = seconds
        self.slots = slots
        self.data = array("f", bytes(4 * FIELDS * slots))
        self.periods = array("q", [-1]) * slots

    def add(self, now: float, row: list[float]) -> None:
        period = int(now // self.seconds)
        index = period % self.slots
        data = self.data
        base = index * FIELDS
        if self.periods[index] != period:
            self.periods[index] = period
            data[base : base + FIELDS] = array("f", row)
            return
        data[base : base + FIELDS] = array("f", map(add, data[base : base + FIELDS], row))

    def read(self, period: int) -> array[float] | None:
        """The slot of `period`, when it is still held."""
        index = period % self.slots
        if self.periods[index] != period:
            return None
        base = index * FIELDS
        return self.data[base : base + FIELDS]

    def covers(self, now: float, start: float) -> bool:
        """Whether this ring still holds `start`'s period when the latest is `now`'s."""
        return int(now // self.seconds) - int(start // self.seconds) < self.slots


@dataclass(slots=True)
class Series:
    rings: tuple[Ring, ...]
    #: Totals since the control plane started, for its Prometheus /metrics.
    totals: list[float] = field(default_factory=lambda: [0.0] * FIELDS)
    blocked_by_kind: dict[str, float] = field(default_factory=dict)
    last_seen: float = 0.0
    #: What arrived in the current second, added into the rings once that second is over (or a
    #: reader needs it): a series gets a row from each of its service's instances every few
    #: seconds, so this turns many ring writes into one per second.
    pending: list[float] | None = None
    pending_at: float = 0.0

    def flush(self) -> None:
        if self.pending is None:
            return
        for ring in self.rings:
            ring.add(self.pending_at, self.pending)
        self.totals = list(map(add, self.totals, self.pending))
        self.pending = None


SeriesKey = tuple[str, str, str]  # (service, tag, resource)


class MetricsStore:
    """Every series, capped; `ingest` a push, `query` a chart."""

    def __init__(self, max_series: int = MAX_SERIES, resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS) -> None:
        self.max_series = max_series
        self.resolutions = resolutions
        self.series: dict[SeriesKey, Series] = {}
        self.dropped = 0  # rows refused because the series cap was reached
        self.pushes = 0
        self.latest = 0.0  # `now` of the latest push

    def ingest(self, push: Any, service: str, tag: str, now: float) -> int:
        """Add one instance's push (validated here) for `service` and `tag`; returns the rows stored."""
        rows = _rows(push)
        rollup = [0.0] * FIELDS
        rolled = False
        stored = 0
        for kind, resource, values, kinds in rows:
            if kind == "in":
                rolled = True
                rollup = list(map(add, rollup, values))  # element-wise in C, not a Python loop per field
            stored += self._add((service, tag, resource), values, kinds, now)
        if rolled:
            self._add((service, tag, ALL), rollup, {}, now)
        self.pushes += 1
        self.latest = max(self.latest, now)
        return stored

    def _add(self, key: SeriesKey, values: list[float], kinds: Mapping[str, float], now: float) -> int:
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_series:
                self.dropped += 1
                return 0
            # two slots over the window, so a chart of the whole window (an hour back from now) is held whole
            series = self.series[key] = Series(tuple(Ring(seconds, slots + 2) for seconds, slots in self.resolutions))
        if series.pending is not None and int(series.pending_at) == int(now):
            series.pending = list(map(add, series.pending, values))
        else:
            series.flush()
            series.pending, series.pending_at = list(values), now
        for kind, count in kinds.items():
            if kind not in series.blocked_by_kind and len(series.blocked_by_kind) >= MAX_BLOCK_KINDS:
                kind = "other"
            series.blocked_by_kind[kind] = series.blocked_by_kind.get(kind, 0.0) + count
        series.last_seen = now
        return 1

    def query(
        self, service: str, resource: str | None, tag: str | None, start: float, end: float, step: float, now: float
    ) -> dict[str, Any]:
        """Columns of points from `start` to `end` every `step` seconds (each point sums the
        slots that begin in [t, t + step)), from the finest ring that still holds `start`
        and is no coarser than `step`. `tag` None sums every tag; `resource` None is the rollup."""
        if not (isfinite(start) and isfinite(end) and isfinite(step)):
            raise MetricsError("from, to and step must be finite numbers", "from")
        if end < start:
            raise MetricsError(f"to ({end}) is before from ({start})", "to")
        if step <= 0:
            raise MetricsError("step must be positive", "step")
        if (end - start) / step > MAX_POINTS:
            raise MetricsError(f"at most {MAX_POINTS} points per query: raise step", "step")
        wanted = resource if resource is not None else ALL
        matching = [s for (svc, tg, res), s in self.series.items() if svc == service and res == wanted and (tag is None or tg == tag)]
        for series in matching:
            series.flush()
        ring_index = self._ring_for(start, step, now)
        seconds = self.resolutions[ring_index][0]
        step = max(step, float(seconds))
        times: list[float] = []
        sums: list[list[float]] = []
        t = float(start)
        while t <= end:
            times.append(t)
            sums.append([0.0] * FIELDS)
            t += step
        first = int(start // seconds)
        last = int(end // seconds)
        for series in matching:
            ring = series.rings[ring_index]
            for period in range(max(first, last - ring.slots + 1), last + 1):
                slot = ring.read(period)
                if slot is None:
                    continue
                point = int((period * seconds - start) // step)
                if 0 <= point < len(sums):
                    target = sums[point]
                    for offset, value in enumerate(slot):
                        target[offset] += value
        return _columns(service, resource, tag, times, sums, step, seconds)

    def window(self, service: str, tag: str, resource: str, start: float, end: float, now: float) -> list[float]:
        """The `FIELDS` counters of one (service, tag, resource) summed over the slots that begin in
        [start, end), from the finest ring that still holds `start` (a rollout's judged window)."""
        total = [0.0] * FIELDS
        series = self.series.get((service, tag, resource))
        if series is None or end <= start:
            return total
        series.flush()
        latest = max(now, self.latest)
        for ring in series.rings:
            if int(latest // ring.seconds) - int(start // ring.seconds) < ring.slots:
                break
        first = math.ceil(start / ring.seconds)
        for period in range(max(first, int(latest // ring.seconds) - ring.slots + 1), math.ceil(end / ring.seconds)):
            slot = ring.read(period)
            if slot is not None:
                total = list(map(add, total, slot))
        return total

    def _ring_for(self, start: float, step: float, now: float) -> int:
        """The coarsest ring no coarser than `step` that still holds `start`'s period; else the
        finest that holds it (the step grows to its resolution); else the coarsest."""
        latest = max(now, self.latest)
        holding = [i for i, (seconds, slots) in enumerate(self.resolutions) if int(latest // seconds) - int(start // seconds) <= slots + 1]
        fine = [i for i in holding if self.resolutions[i][0] <= step]
        if fine:
            return fine[-1]
        return holding[0] if holding else len(self.resolutions) - 1

    def flush(self) -> None:
        """Every series' pending second into its rings and totals (before reading totals)."""
        for series in self.series.values():
            series.flush()

    def resources(self, service: str) -> list[dict[str, Any]]:
        """Per resource of `service` (summed over tags): totals since the start, for the console's table."""
        merged: dict[str, Series] = {}
        for (svc, _tag, resource), series in self.series.items():
            if svc != service:
                continue
            series.flush()
            into = merged.setdefault(resource, Series(()))
            for offset, value in enumerate(series.totals):
                into.totals[offset] += value
            for kind, count in series.blocked_by_kind.items():
                into.blocked_by_kind[kind] = into.blocked_by_kind.get(kind, 0.0) + count
        out = []
        for resource, series in sorted(merged.items()):
            totals = series.totals
            out.append(
                {
                    "resource": resource,
                    "passed": int(totals[PASSED]),
                    "blocked": int(totals[BLOCKED]),
                    "blocked_by_kind": {k: int(v) for k, v in sorted(series.blocked_by_kind.items())},
                    "errors": int(totals[ERRORS]),
                    "rt_avg_ms": round(1000 * totals[RT_SUM] / totals[RT_COUNT], 3) if totals[RT_COUNT] else None,
                    "p99_ms": _ms(quantile(totals[HIST:], 0.99)),
                }
            )
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def quantile(histogram: Iterable[float], q: float) -> float | None:
    """The `q` quantile (0..1) of counts on `BUCKETS` (+Inf last), interpolated within its
    bucket as Prometheus' histogram_quantile does; None when there are no counts. A quantile
    in the +Inf bucket is the highest finite bound."""
    counts = list(histogram)
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    for index, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if index >= len(BUCKETS):
                return BUCKETS[-1]
            low = BUCKETS[index - 1] if index else 0.0
            return low + (BUCKETS[index] - low) * ((rank - cumulative) / count)
        cumulative += count
    return BUCKETS[-1]


def _columns(
    service: str, resource: str | None, tag: str | None, times: list[float], sums: list[list[float]], step: float, seconds: int
) -> dict[str, Any]:
    def per_second(index: int) -> list[float]:
        return [round(point[index] / step, 4) for point in sums]

    return {
        "service": service,
        "resource": resource,
        "tag": tag,
        "step": step,
        "resolution": seconds,
        "t": times,
        "passed": [int(point[PASSED]) for point in sums],
        "blocked": [int(point[BLOCKED]) for point in sums],
        "errors": [int(point[ERRORS]) for point in sums],
        "qps": per_second(PASSED),
        "blocked_qps": per_second(BLOCKED),
        "error_rate": [round(point[ERRORS] / point[PASSED], 4) if point[PASSED] else 0.0 for point in sums],
        "rt_avg_ms": [round(1000 * point[RT_SUM] / point[RT_COUNT], 3) if point[RT_COUNT] else None for point in sums],
        "p50_ms": [_ms(quantile(point[HIST:], 0.5)) for point in sums],
        "p99_ms": [_ms(quantile(point[HIST:], 0.99)) for point in sums],
    }


# -- a push's shape -------------------------------------------------------------------------
#
# {"interval": 5, "rows": [[kind, resource, passed, {block kind: n}, errors, rt_count, rt_sum, [histogram]], ...]}
# counts are the deltas since the instance's previous accepted push; the histogram is
# len(BUCKETS) + 1 counts (or empty).

MAX_ROWS = 2000
MAX_RESOURCE_LENGTH = 200


def _rows(push: Any) -> list[tuple[str, str, list[float], dict[str, float]]]:
    if not isinstance(push, Mapping):
        raise MetricsError("a push is a JSON object with 'rows'", "rows")
    rows = push.get("rows")
    if not isinstance(rows, list):
        raise MetricsError("must be a list of rows", "rows")
    if len(rows) > MAX_ROWS:
        raise MetricsError(f"at most {MAX_ROWS} rows per push", "rows")
    out = []
    for number, row in enumerate(rows):
        where = f"rows[{number}]"
        if not isinstance(row, list) or len(row) != 8:
            raise MetricsError("must be [kind, resource, passed, blocked_by_kind, errors, rt_count, rt_sum, histogram]", where)
        kind, resource, passed, blocked, errors, rt_count, rt_sum, histogram = row
        if kind not in ROW_KINDS:
            raise MetricsError(f"kind must be one of {', '.join(ROW_KINDS)}, got {kind!r}", f"{where}[0]")
        if not isinstance(resource, str) or not resource or len(resource) > MAX_RESOURCE_LENGTH or not resource.isprintable():
            raise MetricsError(f"resource must be printable text of 1 to {MAX_RESOURCE_LENGTH} characters", f"{where}[1]")
        if resource == ALL:
            raise MetricsError(f"{ALL!r} is the rollup's name, not a resource", f"{where}[1]")
        if not isinstance(blocked, Mapping) or len(blocked) > MAX_BLOCK_KINDS:
            raise MetricsError(f"must be an object of at most {MAX_BLOCK_KINDS} block kinds to counts", f"{where}[3]")
        kinds = {}
        for name, count in blocked.items():
            if not isinstance(name, str) or not name.isidentifier() or len(name) > 32:
                raise MetricsError(f"block kind {name!r} is not a short identifier", f"{where}[3]")
            kinds[name] = _count(count, f"{where}[3].{name}")
        if not isinstance(histogram, list) or len(histogram) not in (0, len(BUCKETS) + 1):
            raise MetricsError(f"must be [] or {len(BUCKETS) + 1} counts on the agent's buckets", f"{where}[7]")
        numbers = [passed, errors, rt_count, rt_sum, *histogram]
        if not _counts(numbers):  # one C-level check of the common case; the slow one names the culprit
            for offset, value in zip((2, 4, 5, 6), numbers, strict=False):
                _count(value, f"{where}[{offset}]")
            for c in histogram:
                _count(c, f"{where}[7]")
        values = [passed, sum(kinds.values()), errors, rt_count, rt_sum]
        values += histogram or _NO_HISTOGRAM
        out.append((kind, resource, values, kinds))
    return out


_NO_HISTOGRAM = [0.0] * (len(BUCKETS) + 1)
_NUMBER = frozenset((int, float))


def _counts(values: list[Any]) -> bool:
    """Whether every value is a count `_count` takes (no bool, NaN, negative or huge one). Type by type
    in C (`map(type, ...)`: a bool's type is bool, not int, so it fails here as in `_count`); a NaN
    or an infinity makes the sum not finite."""
    return _NUMBER.issuperset(map(type, values)) and (not values or (isfinite(sum(values)) and 0 <= min(values) and max(values) <= 1e12))


def _count(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value) or value < 0 or value > 1e12:
        raise MetricsError(f"must be a number from 0 to 1e12, got {value!r}", where)
    return float(value)
