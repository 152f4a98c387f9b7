"""Flow control: a rule is a *calculator* (what the threshold is now) paired with a *checker* (what to do at it).

Calculators: `DirectCalculator` (the rule's threshold) and `WarmUpCalculator`
(Sentinel's warm-up token bucket: after a cold start the allowed rate begins at
threshold / cold_factor and rises to the threshold over `warmup_s`). Checkers:
`RejectChecker` (refuse the call that would exceed the threshold) and
`ThrottlingChecker` (pace calls evenly, one per duration/threshold, letting a
caller queue up to `max_queue_s`; the caller sleeps the returned wait, the core
never does). Any calculator pairs with any checker, as in sentinel-golang.

Grades: `qps` counts calls passed in the rule's window (`stat_duration_s`,
default 1 s, so the threshold is "calls per stat duration"), `concurrency`
counts calls in flight. Strategies: `direct` (the resource's own statistics),
`relate` (limit this resource by `ref_resource`'s statistics), `chain` (only
calls that entered through the context `ref_resource`, counted in that context).
`origin` is Sentinel's limitApp: "default" (every caller, the resource's
totals), a caller name (only that caller, counted per caller), or "other"
(callers that no other rule of the resource names).

Checks return the seconds to wait (0.0 to go at once) or BLOCKED.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from tidegate.core.stat import StatNode, Window
from tidegate.errors import RuleError

BLOCKED = -1.0

GRADES = ("qps", "concurrency")
STRATEGIES = ("direct", "relate", "chain")
BEHAVIORS = ("reject", "throttle")
ORIGIN_DEFAULT = "default"
ORIGIN_OTHER = "other"

# Which statistics a controller reads; the Governor picks the node by this.
NODE_RESOURCE = 0
NODE_ORIGIN = 1
NODE_RELATE = 2
NODE_CONTEXT = 3


@dataclass(frozen=True, slots=True)
class FlowRule:
    """One flow-control rule for one resource."""

    resource: str
    threshold: float
    name: str = ""
    grade: str = "qps"
    stat_duration_s: int = 1
    strategy: str = "direct"
    ref_resource: str = ""
    origin: str = ORIGIN_DEFAULT
    warmup_s: int = 0
    cold_factor: int = 3
    behavior: str = "reject"
    max_queue_s: float = 0.5

    @property
    def label(self) -> str:
        return self.name or f"flow:{self.resource}"

    def validate(self) -> None:
        """Raise RuleError naming the field if this rule cannot be enforced."""
        doc = f"flow rule {self.label!r}"
        if not self.resource:
            raise RuleError("must name a resource", document=doc, field="resource")
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, (int, float))
            or self.threshold < 0
            or math.isnan(self.threshold)
        ):
            raise RuleError("must be a number >= 0", document=doc, field="threshold")
        if self.grade not in GRADES:
            raise RuleError(f"must be one of {', '.join(GRADES)}", document=doc, field="grade")
        if self.strategy not in STRATEGIES:
            raise RuleError(f"must be one of {', '.join(STRATEGIES)}", document=doc, field="strategy")
        if self.behavior not in BEHAVIORS:
            raise RuleError(f"must be one of {', '.join(BEHAVIORS)}", document=doc, field="behavior")
        if self.strategy != "direct" and not self.ref_resource:
            raise RuleError(
                f"strategy {self.strategy!r} needs the resource (relate) or entrance (chain) it refers to",
                document=doc,
                field="ref_resource",
            )
        if not self.origin:
            raise RuleError("must be 'default', 'other' or a caller name", document=doc, field="origin")
        if (
            not isinstance(self.stat_duration_s, int)
            or not 1 <= self.stat_duration_s <= 3600
            or (self.stat_duration_s > 60 and self.stat_duration_s % 60)
        ):
            raise RuleError("must be whole seconds from 1 to 60, or a multiple of 60 up to 3600", document=doc, field="stat_duration_s")
        if self.stat_duration_s != 1 and (self.strategy != "direct" or self.origin != ORIGIN_DEFAULT):
            raise RuleError(
                "a stat duration other than 1 s works only with strategy direct and origin default", document=doc, field="stat_duration_s"
            )
        if not isinstance(self.warmup_s, int) or self.warmup_s < 0:
            raise RuleError("must be whole seconds >= 0", document=doc, field="warmup_s")
        if self.warmup_s and (self.grade != "qps" or self.stat_duration_s != 1):
            raise RuleError("warm-up applies to the qps grade with a 1 s stat duration", document=doc, field="warmup_s")
        if self.warmup_s and int(2 * self.warmup_s * self.threshold / (1 + self.cold_factor)) < 1:
            raise RuleError(
                "too short for this threshold: warm-up needs warmup_s x threshold >= (1 + cold_factor) / 2", document=doc, field="warmup_s"
            )
        if not isinstance(self.cold_factor, int) or self.cold_factor < 2:
            raise RuleError("must be a whole number >= 2", document=doc, field="cold_factor")
        if self.behavior == "throttle" and self.grade != "qps":
            raise RuleError("throttling (queueing) applies to the qps grade only", document=doc, field="behavior")
        if not isinstance(self.max_queue_s, (int, float)) or self.max_queue_s < 0:
            raise RuleError("must be seconds >= 0", document=doc, field="max_queue_s")


class DirectCalculator:
    """The threshold is the rule's."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def threshold(self, node: StatNode, now_ms: int) -> float:
        return self.value


class WarmUpCalculator:
    """Sentinel's WarmUpController threshold (a Guava SmoothWarmingUp token bucket).

    warning_token = warmup_s * count / (cold_factor - 1)
    max_token     = warning_token + 2 * warmup_s * count / (1 + cold_factor)
    slope         = (cold_factor - 1) / count / (max_token - warning_token)
    (the token numbers truncated to integers, as Sentinel). Once a second the
    bucket is synced: refilled at `count` tokens per second while below the
    warning line (or above it while the previous second passed fewer than
    count // cold_factor calls), capped at max_token, then drained by the
    previous second's passed calls. With stored tokens above the warning line
    the allowed rate is 1 / ((stored - warning) * slope + 1 / count), else count.
    A new calculator starts cold (full bucket), as Sentinel's does at start.
    """

    __slots__ = ("count", "cold_factor", "warning_token", "max_token", "slope", "stored_tokens", "last_filled_ms")

    def __init__(self, count: float, warmup_s: int, cold_factor: int = 3) -> None:
        self.count = count
        self.cold_factor = cold_factor
        self.warning_token = int(warmup_s * count / (cold_factor - 1))
        self.max_token = self.warning_token + int(2 * warmup_s * count / (1 + cold_factor))
        self.slope = (cold_factor - 1.0) / count / (self.max_token - self.warning_token)
        self.stored_tokens = 0
        self.last_filled_ms: int | None = None

    def threshold(self, node: StatNode, now_ms: int) -> float:
        self.sync(node.previous_second_pass(now_ms), now_ms)
        rest = self.stored_tokens
        if rest >= self.warning_token:
            return math.nextafter(1.0 / ((rest - self.warning_token) * self.slope + 1.0 / self.count), math.inf)
        return self.count

    def sync(self, previous_pass: int, now_ms: int) -> None:
        second_ms = now_ms - now_ms % 1000
        last = self.last_filled_ms
        if last is None:
            self.stored_tokens = self.max_token
        elif second_ms <= last:
            return
        else:
            old = new = self.stored_tokens
            # Refill below the warning line, or above it only while traffic is light (the bucket cools down).
            if old < self.warning_token or (old > self.warning_token and previous_pass < int(self.count) // self.cold_factor):
                new = int(old + (second_ms - last) * self.count / 1000.0)
            self.stored_tokens = max(0, min(new, self.max_token) - previous_pass)
        self.last_filled_ms = second_ms


class RejectChecker:
    """Refuse the call that would take the count past the threshold."""

    __slots__ = ("concurrency", "window")

    def __init__(self, concurrency: bool, window: Window | None = None) -> None:
        self.concurrency = concurrency
        # A rule with its own stat duration reads its own window, else the node's second window.
        self.window = window

    def check(self, node: StatNode, now_ms: int, now: float, threshold: float) -> float:
        if self.concurrency:
            current = node.concurrency
        else:
            window = self.window or node.second
            if now_ms >= window.live_end:
                window.roll(now_ms)
            current = window.prior_passed + window.passed
        return BLOCKED if current + 1 > threshold else 0.0

    def retry_after_s(self, node: StatNode, now_ms: int, now: float) -> float | None:
        if self.concurrency:
            return None
        window = self.window or node.second
        return max(0, window.live_end - now_ms) / 1000.0


class ThrottlingChecker:
    """Pace calls `stat_duration_s / threshold` apart; a caller may queue up to `max_queue_s` (Sentinel's RateLimiter).

    The slot a call takes (read `last_passed`, move it on) is taken under a lock, as
    Sentinel takes it with a compare-and-swap: two threads never take the same slot."""

    __slots__ = ("duration_s", "max_queue_s", "last_passed", "_refused_wait", "_lock")

    def __init__(self, duration_s: float, max_queue_s: float) -> None:
        self.duration_s = duration_s
        self.max_queue_s = max_queue_s
        self.last_passed = -math.inf
        self._refused_wait = 0.0
        self._lock = threading.Lock()

    def check(self, node: StatNode, now_ms: int, now: float, threshold: float) -> float:
        if threshold < 1.0:
            self._refused_wait = self.duration_s
            return BLOCKED
        interval = self.duration_s / threshold
        with self._lock:
            expected = self.last_passed + interval
            if expected <= now:
                self.last_passed = now
                return 0.0
            wait = expected - now
            if wait > self.max_queue_s:
                self._refused_wait = wait
                return BLOCKED
            self.last_passed = expected
            return wait

    def retry_after_s(self, node: StatNode, now_ms: int, now: float) -> float | None:
        return max(0.0, self._refused_wait - self.max_queue_s)


Calculator = DirectCalculator | WarmUpCalculator
Checker = RejectChecker | ThrottlingChecker


class FlowController:
    """One rule in force: its calculator, its checker, and which statistics it reads."""

    __slots__ = ("rule", "calculator", "checker", "node_kind", "window", "ref_node", "plain_limit")

    def __init__(self, rule: FlowRule, ref_node: StatNode | None = None) -> None:
        self.rule = rule
        self.calculator: Calculator = (
            WarmUpCalculator(rule.threshold, rule.warmup_s, rule.cold_factor) if rule.warmup_s else DirectCalculator(rule.threshold)
        )
        self.window: Window | None = None
        if rule.stat_duration_s != 1 and rule.behavior == "reject" and rule.grade == "qps":
            buckets = rule.stat_duration_s if rule.stat_duration_s <= 60 else 60
            self.window = Window(buckets, rule.stat_duration_s * 1000)
        self.checker: Checker = (
            ThrottlingChecker(float(rule.stat_duration_s), float(rule.max_queue_s))
            if rule.behavior == "throttle"
            else RejectChecker(rule.grade == "concurrency", self.window)
        )
        self.ref_node = ref_node
        if rule.strategy == "relate":
            self.node_kind = NODE_RELATE
        elif rule.strategy == "chain":
            self.node_kind = NODE_CONTEXT
        elif rule.origin != ORIGIN_DEFAULT:
            self.node_kind = NODE_ORIGIN
        else:
            self.node_kind = NODE_RESOURCE
        # The common pairing (direct calculator, reject checker, qps on the resource's own second) needs no
        # calls: the Governor compares the count with this number inline.
        plain = (
            self.node_kind == NODE_RESOURCE
            and rule.grade == "qps"
            and not rule.warmup_s
            and rule.behavior == "reject"
            and self.window is None
        )
        self.plain_limit: float | None = float(rule.threshold) if plain else None

    def check(self, node: StatNode, now_ms: int, now: float) -> float:
        """Seconds to wait before the call may go (0.0: at once), or BLOCKED."""
        return self.checker.check(node, now_ms, now, self.calculator.threshold(node, now_ms))

    def refusal(self, node: StatNode, now_ms: int, now: float) -> tuple[str, float | None]:
        """Why the last check blocked, and when trying again makes sense."""
        rule = self.rule
        if rule.behavior == "throttle":
            why = f"queue longer than {rule.max_queue_s:g}s at {rule.threshold:g} per {rule.stat_duration_s}s"
        elif rule.grade == "concurrency":
            why = f"{rule.threshold:g} concurrent calls reached"
        else:
            why = f"{rule.threshold:g} calls per {rule.stat_duration_s}s reached"
        return why, self.checker.retry_after_s(node, now_ms, now)
