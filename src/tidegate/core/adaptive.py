"""Adaptive protection: when the process is saturated, admit only what it can finish (BBR).

The algorithm, after Sentinel's system rule with its BBR check:

1. A *trigger* says the process is saturated. The edge measures and reports
   (`SystemReadings`): event-loop lag (asyncio servers) and CPU usage (0..1);
   the core itself knows the inbound concurrency (calls in flight, the signal
   for thread servers). Each `AdaptiveRule` sets any of `max_loop_lag_s`,
   `max_cpu_usage`, `max_concurrency`; several rules combine to the tightest.
   No trigger past its limit: every call is admitted.
2. Saturated: an inbound call is admitted while the calls already in flight
   `c` satisfy  c <= 1  or  c <= max_pass_qps x min_rt / 1000,  where, over the
   inbound second window (2 x 500 ms), max_pass_qps is the busiest bucket's
   completions scaled to a second and min_rt the smallest RT in ms (5000 ms if
   nothing completed, Sentinel's statisticMaxRt). That product is the number
   of calls the process can hold in flight at its best measured throughput and
   latency (Little's law, the bandwidth-delay product of TCP BBR); beyond it
   calls only queue and lengthen everyone's latency.

Only inbound calls are checked (`Governor.entry(..., inbound=True)`), as
Sentinel's system rules check only inbound traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tidegate.core.stat import StatNode
from tidegate.errors import RuleError


@dataclass(frozen=True, slots=True)
class AdaptiveRule:
    """When to consider the process saturated; at least one trigger is set."""

    name: str = ""
    max_loop_lag_s: float | None = None
    max_cpu_usage: float | None = None
    max_concurrency: int | None = None

    @property
    def label(self) -> str:
        return self.name or "adaptive"

    def validate(self) -> None:
        doc = f"adaptive rule {self.label!r}"
        if self.max_loop_lag_s is None and self.max_cpu_usage is None and self.max_concurrency is None:
            raise RuleError(
                "set at least one trigger: max_loop_lag_s, max_cpu_usage or max_concurrency", document=doc, field="max_loop_lag_s"
            )
        for field, value in (("max_loop_lag_s", self.max_loop_lag_s), ("max_cpu_usage", self.max_cpu_usage)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0):
                raise RuleError("must be a number > 0", document=doc, field=field)
        if self.max_cpu_usage is not None and self.max_cpu_usage > 1:
            raise RuleError("is a fraction of one: 0 < usage <= 1", document=doc, field="max_cpu_usage")
        if self.max_concurrency is not None and (
            isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int) or self.max_concurrency < 1
        ):
            raise RuleError("must be a whole number >= 1", document=doc, field="max_concurrency")


class SystemReadings:
    """What the edge last measured about the process."""

    __slots__ = ("loop_lag_s", "cpu_usage")

    def __init__(self) -> None:
        self.loop_lag_s = 0.0
        self.cpu_usage = 0.0


def _tightest(values: Iterable[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class AdaptiveGuard:
    """The combined adaptive rules in force, deciding admission of inbound calls."""

    __slots__ = ("rules", "label", "max_loop_lag_s", "max_cpu_usage", "max_concurrency")

    def __init__(self, rules: tuple[AdaptiveRule, ...]) -> None:
        self.rules = rules
        #: Names the rules in force together, for the BlockedError of a refusal.
        self.label = ", ".join(r.label for r in rules)
        self.max_loop_lag_s = _tightest(r.max_loop_lag_s for r in rules)
        self.max_cpu_usage = _tightest(r.max_cpu_usage for r in rules)
        self.max_concurrency = _tightest(r.max_concurrency for r in rules)

    def trigger(self, readings: SystemReadings, concurrency: int) -> str:
        """The trigger past its limit, described, or "" if the process is not saturated."""
        if self.max_loop_lag_s is not None and readings.loop_lag_s > self.max_loop_lag_s:
            return f"event-loop lag {readings.loop_lag_s:.3f}s > {self.max_loop_lag_s:g}s"
        if self.max_cpu_usage is not None and readings.cpu_usage > self.max_cpu_usage:
            return f"CPU usage {readings.cpu_usage:.2f} > {self.max_cpu_usage:g}"
        if self.max_concurrency is not None and concurrency > self.max_concurrency:
            return f"{concurrency} inbound calls in flight > {self.max_concurrency:g}"
        return ""

    def refusal(self, inbound: StatNode, readings: SystemReadings, now_ms: int) -> str:
        """Why an inbound call must be refused now, or "" to admit it."""
        concurrency = inbound.concurrency
        if concurrency <= 1:
            return ""
        trigger = self.trigger(readings, concurrency)
        if not trigger:
            return ""
        window = inbound.second
        max_qps = window.max_success_per_second(now_ms)
        min_rt = window.min_rt(now_ms)
        capacity = max_qps * min_rt / 1000.0
        if concurrency <= capacity:
            return ""
        return f"{trigger} and {concurrency} calls in flight > capacity {capacity:g} ({max_qps:g}/s x {min_rt:g} ms)"
