"""Circuit breaking: CLOSED -> OPEN -> HALF_OPEN -> CLOSED | OPEN, as Sentinel's breakers.

Strategies: `slow_ratio` (a completed call slower than `max_allowed_rt_ms` is
bad; trips when bad / total >= threshold), `error_ratio` (a failed call is
bad; same ratio test) and `error_count` (trips when bad >= threshold). Calls
are counted in the breaker's own window of `stat_interval_ms` (split in
`buckets`, default 1 as Sentinel), and nothing trips before
`min_request_amount` calls completed in it.

Once OPEN, every call is refused until `retry_timeout_ms` has passed; the
first call after that is let through as the single probe and the breaker is
HALF_OPEN (one probe per recovery, as Sentinel with probeNum 0). Other calls
are refused while HALF_OPEN. The probe's completion decides: good -> CLOSED
(the window starts empty), bad -> OPEN for another `retry_timeout_ms`. A probe
refused by a later check of the same call reverts the breaker to OPEN.

State changes are told to listeners `(rule, from_state, to_state, now, snapshot)`
where snapshot is the ratio or count that tripped it (1.0 for a failed probe);
the edge turns them into events. A listener that raises never breaks a call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tidegate.core.stat import Window
from tidegate.errors import RuleError

CLOSED = "CLOSED"
OPEN = "OPEN"
HALF_OPEN = "HALF_OPEN"
STRATEGIES = ("slow_ratio", "error_ratio", "error_count")


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """One circuit-breaking rule for one resource."""

    resource: str
    strategy: str
    threshold: float
    name: str = ""
    max_allowed_rt_ms: float = 0.0
    min_request_amount: int = 5
    stat_interval_ms: int = 1000
    retry_timeout_ms: int = 5000
    buckets: int = 1

    @property
    def label(self) -> str:
        return self.name or f"breaker:{self.resource}"

    def validate(self) -> None:
        doc = f"circuit-breaker rule {self.label!r}"
        if not self.resource:
            raise RuleError("must name a resource", document=doc, field="resource")
        if self.strategy not in STRATEGIES:
            raise RuleError(f"must be one of {', '.join(STRATEGIES)}", document=doc, field="strategy")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t):
            raise RuleError("must be a number", document=doc, field="threshold")
        if self.strategy == "error_count":
            if t < 1:
                raise RuleError("must be a count >= 1", document=doc, field="threshold")
        elif not 0.0 < t <= 1.0:
            raise RuleError("must be a ratio in (0, 1]", document=doc, field="threshold")
        if self.strategy == "slow_ratio" and not (isinstance(self.max_allowed_rt_ms, (int, float)) and self.max_allowed_rt_ms > 0):
            raise RuleError("must be milliseconds > 0 for the slow_ratio strategy", document=doc, field="max_allowed_rt_ms")
        if not isinstance(self.min_request_amount, int) or self.min_request_amount < 0:
            raise RuleError("must be a whole number >= 0", document=doc, field="min_request_amount")
        if not isinstance(self.stat_interval_ms, int) or self.stat_interval_ms <= 0:
            raise RuleError("must be whole milliseconds > 0", document=doc, field="stat_interval_ms")
        if not isinstance(self.buckets, int) or self.buckets <= 0 or self.stat_interval_ms % self.buckets:
            raise RuleError("must be a whole number > 0 that divides stat_interval_ms", document=doc, field="buckets")
        if not isinstance(self.retry_timeout_ms, int) or self.retry_timeout_ms <= 0:
            raise RuleError("must be whole milliseconds > 0", document=doc, field="retry_timeout_ms")


StateListener = Callable[[BreakerRule, str, str, float, "float | None"], None]


class CircuitBreaker:
    """The state machine of one breaker rule, with its own statistics window."""

    __slots__ = (
        "rule",
        "state",
        "next_retry_ms",
        "window",
        "listeners",
        "_slow",
        "_max_rt_ms",
        "_count",
        "_threshold",
        "_min_amount",
        "_lock",
    )

    def __init__(self, rule: BreakerRule, listeners: list[StateListener] | None = None) -> None:
        self.rule = rule
        self.state = CLOSED
        self.next_retry_ms = 0
        self.window = Window(rule.buckets, rule.stat_interval_ms)
        self.listeners = listeners if listeners is not None else []
        self._slow = rule.strategy == "slow_ratio"
        self._max_rt_ms = rule.max_allowed_rt_ms
        self._count = rule.strategy == "error_count"
        self._threshold = rule.threshold
        self._min_amount = rule.min_request_amount
        self._lock = threading.Lock()

    def try_pass(self, now_ms: int, now: float) -> bool:
        """May a call go? In OPEN after the retry timeout, the first caller becomes the probe."""
        state = self.state
        if state is CLOSED:
            return True
        if state is OPEN and now_ms >= self.next_retry_ms:
            with self._lock:
                if self.state is not OPEN:
                    return False
                self.state = HALF_OPEN
            self._tell(OPEN, HALF_OPEN, now, None)
            return True
        return False

    def retry_after_s(self, now_ms: int) -> float | None:
        if self.state is OPEN:
            return max(0, self.next_retry_ms - now_ms) / 1000.0
        return None

    def on_complete(self, rt_ms: float, error: bool, now: float) -> None:
        """Record a finished call (only calls that passed finish) and move the state if it says so."""
        bad = rt_ms > self._max_rt_ms if self._slow else error
        window = self.window
        if now >= window.live_end_s:
            window.roll(int(now * 1000.0))
        # The breaker's window counts completions as `success` and bad ones as `error`.
        window.success += 1
        if bad:
            window.error += 1
        state = self.state
        if state is CLOSED:
            total = window.prior_success + window.success
            if total < self._min_amount:
                return
            bads = window.prior_error + window.error
            snapshot = float(bads) if self._count else bads / total
            if snapshot >= self._threshold:
                self._move(CLOSED, OPEN, int(now * 1000.0), now, snapshot)
        elif state is HALF_OPEN:
            if bad:
                self._move(HALF_OPEN, OPEN, int(now * 1000.0), now, 1.0)
            elif self._move(HALF_OPEN, CLOSED, int(now * 1000.0), now, None):
                self.window = Window(self.rule.buckets, self.rule.stat_interval_ms)

    def revert_probe(self, now_ms: int, now: float) -> None:
        """The probe this breaker let through was refused further on: back to OPEN."""
        self._move(HALF_OPEN, OPEN, now_ms, now, 1.0)

    def _move(self, source: str, target: str, now_ms: int, now: float, snapshot: float | None) -> bool:
        with self._lock:
            if self.state is not source:
                return False
            self.state = target
            if target is OPEN:
                self.next_retry_ms = now_ms + self.rule.retry_timeout_ms
        self._tell(source, target, now, snapshot)
        return True

    def _tell(self, source: str, target: str, now: float, snapshot: float | None) -> None:
        for listener in self.listeners:
            try:
                listener(self.rule, source, target, now, snapshot)
            except Exception:  # noqa: BLE001  (a listener's bug must not refuse or break the call)
                continue
