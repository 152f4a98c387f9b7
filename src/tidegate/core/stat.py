"""Sliding-window request statistics (Sentinel's LeapArray), cheap enough for every call.

A `Window` covers `interval_ms` with `sample_count` buckets of
`interval_ms // sample_count` ms each; a bucket starts at a multiple of its
length. Sentinel's defaults, used here too: the second window is 2 buckets x
500 ms, the minute window 60 buckets x 1 s. A bucket counts as "in the window"
at time t while `t - bucket_start <= interval_ms`, exactly as Sentinel.

Only the live (newest) bucket is written by the hot path, as plain attribute
increments; when time moves past it, `roll` files it with the finished buckets
and precomputes the sums of the ones still in the window, so a read is one
addition. The same roll feeds the minute window (`MinuteWindow`), so the
second-by-second history costs nothing per call. Time is an integer count of
milliseconds here; the `Governor` derives it once per call from its float
seconds. Counts are kept without locks: under threads a racing increment can be
lost (never made negative), which costs a request or two of accuracy, not safety.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

#: Sentinel's `statisticMaxRt`: the minimum RT reported by a window that saw no completion.
STATISTIC_MAX_RT_MS = 5000.0

# Rolls are rare (once per bucket per window) and short; one lock keeps two threads crossing the
# same boundary from filing the live bucket twice, at no cost to the per-call increments.
_ROLL_LOCK = threading.Lock()


class Bucket(NamedTuple):
    """One finished bucket: what happened in [start_ms, start_ms + bucket length)."""

    start_ms: int
    passed: int
    blocked: int
    success: int
    error: int
    rt_sum_ms: float
    min_rt_ms: float


class MinuteWindow:
    """Per-second history of the last `seconds` seconds, fed by a `Window`'s finished buckets."""

    __slots__ = ("seconds", "_starts", "_passed", "_blocked", "_success", "_error", "_rt_sum")

    def __init__(self, seconds: int = 60) -> None:
        self.seconds = seconds
        self._starts = [-1] * seconds
        self._passed = [0] * seconds
        self._blocked = [0] * seconds
        self._success = [0] * seconds
        self._error = [0] * seconds
        self._rt_sum = [0.0] * seconds

    def add(self, bucket: Bucket) -> None:
        second = bucket.start_ms // 1000
        idx = second % self.seconds
        if self._starts[idx] != second:
            self._starts[idx] = second
            self._passed[idx] = self._blocked[idx] = self._success[idx] = self._error[idx] = 0
            self._rt_sum[idx] = 0.0
        self._passed[idx] += bucket.passed
        self._blocked[idx] += bucket.blocked
        self._success[idx] += bucket.success
        self._error[idx] += bucket.error
        self._rt_sum[idx] += bucket.rt_sum_ms

    def second(self, second: int) -> tuple[int, int, int, int, float]:
        """(passed, blocked, success, error, rt_sum_ms) of the whole second `second` (0s if unknown)."""
        idx = second % self.seconds
        if self._starts[idx] != second:
            return (0, 0, 0, 0, 0.0)
        return (self._passed[idx], self._blocked[idx], self._success[idx], self._error[idx], self._rt_sum[idx])


class Window:
    """A LeapArray of request counters: pass, block, success, error, RT sum and min RT.

    As in Sentinel, `success` counts every completed call (errors included) and
    `error` the completed calls that failed; RTs are float milliseconds."""

    __slots__ = (
        "interval_ms",
        "bucket_ms",
        "sample_count",
        "minute",
        "live_start",
        "live_end",
        "live_end_s",
        "passed",
        "blocked",
        "success",
        "error",
        "rt_sum_ms",
        "min_rt_ms",
        "_finished",
        "prior_passed",
        "prior_blocked",
        "prior_success",
        "prior_error",
        "prior_rt_sum_ms",
        "prior_min_rt_ms",
        "prior_max_success",
    )

    def __init__(self, sample_count: int = 2, interval_ms: int = 1000, minute: MinuteWindow | None = None) -> None:
        if sample_count <= 0 or interval_ms <= 0 or interval_ms % sample_count:
            raise ValueError(f"interval_ms {interval_ms} must be a positive multiple of sample_count {sample_count}")
        self.interval_ms = interval_ms
        self.sample_count = sample_count
        self.bucket_ms = interval_ms // sample_count
        if minute is not None and 1000 % self.bucket_ms:
            raise ValueError(f"a minute window needs buckets that divide a second, not {self.bucket_ms} ms")
        self.minute = minute
        self._finished: list[Bucket] = []
        self.live_start = -1
        self.live_end = -1  # the first call rolls
        self.live_end_s = -1.0
        self._reset_live()
        self._sum_prior()

    def _reset_live(self) -> None:
        self.passed = self.blocked = self.success = self.error = 0
        self.rt_sum_ms = 0.0
        self.min_rt_ms = STATISTIC_MAX_RT_MS

    def _sum_prior(self) -> None:
        finished = self._finished
        self.prior_passed = sum(b.passed for b in finished)
        self.prior_blocked = sum(b.blocked for b in finished)
        self.prior_success = sum(b.success for b in finished)
        self.prior_error = sum(b.error for b in finished)
        self.prior_rt_sum_ms = sum(b.rt_sum_ms for b in finished)
        self.prior_min_rt_ms = min((b.min_rt_ms for b in finished), default=STATISTIC_MAX_RT_MS)
        self.prior_max_success = max((b.success for b in finished), default=0)

    def roll(self, now_ms: int) -> None:
        """Make the bucket holding `now_ms` the live one (callers check `now_ms >= live_end` first)."""
        start = now_ms - now_ms % self.bucket_ms
        with _ROLL_LOCK:
            if start <= self.live_start:
                # Another thread rolled first, or the clock stepped back: keep counting in the live bucket.
                return
            if self.live_start >= 0:
                done = Bucket(self.live_start, self.passed, self.blocked, self.success, self.error, self.rt_sum_ms, self.min_rt_ms)
                self._finished.append(done)
                if self.minute is not None:
                    self.minute.add(done)
            oldest = start - self.interval_ms + self.bucket_ms
            self._finished = [b for b in self._finished if b.start_ms >= oldest]
            self._reset_live()
            self._sum_prior()
            self.live_start = start
            self.live_end = start + self.bucket_ms
            # For callers holding float seconds: `now >= live_end_s` spares them the conversion on the hot path.
            self.live_end_s = self.live_end / 1000.0

    # Reads: each first brings the window to `now_ms`.

    def pass_count(self, now_ms: int) -> int:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return self.prior_passed + self.passed

    def block_count(self, now_ms: int) -> int:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return self.prior_blocked + self.blocked

    def success_count(self, now_ms: int) -> int:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return self.prior_success + self.success

    def error_count(self, now_ms: int) -> int:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return self.prior_error + self.error

    def rt_sum(self, now_ms: int) -> float:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return self.prior_rt_sum_ms + self.rt_sum_ms

    def min_rt(self, now_ms: int) -> float:
        """Smallest RT in the window, or STATISTIC_MAX_RT_MS if nothing completed (as Sentinel)."""
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return min(self.prior_min_rt_ms, self.min_rt_ms)

    def max_success_per_second(self, now_ms: int) -> float:
        """The busiest bucket's completions, scaled to a second (Sentinel's `maxSuccessQps`)."""
        if now_ms >= self.live_end:
            self.roll(now_ms)
        return max(self.prior_max_success, self.success) * 1000.0 / self.bucket_ms

    # Writes, for callers that are not on the hot path (the Governor increments the attributes itself).

    def add_pass(self, now_ms: int, count: int = 1) -> None:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        self.passed += count

    def add_block(self, now_ms: int, count: int = 1) -> None:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        self.blocked += count

    def add_complete(self, now_ms: int, rt_ms: float, error: bool = False) -> None:
        if now_ms >= self.live_end:
            self.roll(now_ms)
        self.success += 1
        self.rt_sum_ms += rt_ms
        if rt_ms < self.min_rt_ms:
            self.min_rt_ms = rt_ms
        if error:
            self.error += 1


class StatNode:
    """Statistics of one resource (or one resource as seen from one origin or context).

    Calls in progress are entries of `active` (each entry appends one, each exit pops
    one): a deque's append and pop are atomic, with the GIL or without it (free-threaded
    builds), where `concurrency += 1` is a read, an add and a write that two threads can
    interleave, and a lost decrement would lower a concurrency limit for good. The
    window counters are per-bucket statistics and take no lock."""

    __slots__ = ("second", "minute", "active")

    def __init__(self) -> None:
        self.minute = MinuteWindow(60)
        self.second = Window(2, 1000, self.minute)
        self.active: deque[None] = deque()

    @property
    def concurrency(self) -> int:
        """Calls in progress."""
        return len(self.active)

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        self.active = deque([None] * value)

    def previous_second_pass(self, now_ms: int) -> int:
        """Requests passed in the whole second before the one holding `now_ms` (Sentinel's previousPassQps)."""
        second = self.second
        if now_ms >= second.live_end:
            second.roll(now_ms)
        return self.minute.second(now_ms // 1000 - 1)[0]
