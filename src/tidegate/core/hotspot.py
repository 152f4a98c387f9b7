"""Hot-spot parameter limits: a separate QPS budget for each value of one parameter.

Sentinel's ParamFlowChecker (QPS grade, reject): each value has a token count
that starts full at threshold + burst; a call spends one token or is refused.
Tokens come back only once more than `duration_s` has passed since the value
last got tokens: then (elapsed_ms x threshold // duration_ms) are added, capped
at threshold + burst. Named `exceptions` values use their own threshold (0
refuses every call with that value).

Values are tracked in an LRU of `capacity` entries (default, as Sentinel:
min(4000 x duration_s, 200000)). When a new value arrives at a full cache the
least recently used value is evicted; if it comes back it starts again with a
full bucket, so eviction can only let an evicted value through more, never
refuse a value more. The edge extracts the value (path param, query param,
header) and passes it in `args`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from tidegate.errors import RuleError


@dataclass(frozen=True, slots=True)
class HotspotRule:
    """Per-value limit on the parameter `param` of `resource`."""

    resource: str
    param: str
    threshold: int
    name: str = ""
    duration_s: int = 1
    burst: int = 0
    exceptions: tuple[tuple[str, int], ...] = ()
    capacity: int = 0  # 0: Sentinel's default size

    @property
    def label(self) -> str:
        return self.name or f"hotspot:{self.resource}:{self.param}"

    def validate(self) -> None:
        doc = f"hot-spot rule {self.label!r}"
        if not self.resource:
            raise RuleError("must name a resource", document=doc, field="resource")
        if not self.param:
            raise RuleError("must name the parameter", document=doc, field="param")
        for field, value, low in (
            ("threshold", self.threshold, 0),
            ("duration_s", self.duration_s, 1),
            ("burst", self.burst, 0),
            ("capacity", self.capacity, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise RuleError(f"must be a whole number >= {low}", document=doc, field=field)
        for excepted, threshold in self.exceptions:
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
                raise RuleError(f"threshold of value {excepted!r} must be a whole number >= 0", document=doc, field="exceptions")

    @property
    def cache_size(self) -> int:
        return self.capacity or min(4000 * self.duration_s, 200_000)


class HotspotLimiter:
    """Token counts of the hottest values of one parameter, for one rule."""

    __slots__ = ("rule", "param", "threshold", "max_count", "duration_ms", "exceptions", "capacity", "values", "_lock")

    def __init__(self, rule: HotspotRule) -> None:
        self.rule = rule
        self.param = rule.param
        self.threshold = rule.threshold
        self.duration_ms = rule.duration_s * 1000
        self.exceptions = dict(rule.exceptions)
        self.capacity = rule.cache_size
        # value -> [time tokens were last added (ms), tokens left]
        self.values: OrderedDict[str, list[int]] = OrderedDict()
        # One value's tokens are read and taken under it; so is the eviction of the coldest value
        # (another thread could otherwise evict the value being moved to the end: a KeyError).
        self._lock = threading.Lock()

    def try_pass(self, value: str, now_ms: int) -> bool:
        tokens = self.exceptions.get(value, self.threshold)
        if tokens == 0:
            return False
        with self._lock:
            return self._take(value, tokens, now_ms)

    def _take(self, value: str, tokens: int, now_ms: int) -> bool:
        max_count = tokens + self.rule.burst
        state = self.values.get(value)
        if state is None:
            self.values[value] = [now_ms, max_count - 1]
            if len(self.values) > self.capacity:
                self.values.popitem(last=False)
            return True
        self.values.move_to_end(value)
        elapsed = now_ms - state[0]
        if elapsed > self.duration_ms:
            added = elapsed * tokens // self.duration_ms
            rest = state[1]
            state[0] = now_ms
            state[1] = max_count - 1 if rest + added > max_count else rest + added - 1
            return True
        if state[1] >= 1:
            state[1] -= 1
            return True
        return False

    def retry_after_s(self, value: str, now_ms: int) -> float | None:
        state = self.values.get(value)
        if state is None or self.exceptions.get(value, self.threshold) == 0:
            return None
        return max(0, state[0] + self.duration_ms + 1 - now_ms) / 1000.0
