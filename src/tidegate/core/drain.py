"""Lossless offline, as decisions on numbers: when a drain is done, who to tell, who is out.

Three small state machines, each fed the time by its caller:
  - `Drain`: one instance's drain. It begins, then waits until no request is
    in flight (and at least a short settle time has passed, for requests
    already on their way when consumers were told), bounded by a timeout;
    `cancel` undoes a drain that has not finished (`POST /online`).
  - `RecentConsumers`: the bounded set of consumers (service, admin address)
    that called this instance recently, least recently seen dropped first,
    each forgotten after a time to live; a draining instance tells them directly.
  - `Ejections`: passive ejection on the consumer side. An instance whose
    connection failed is out of balancing at once, for a backoff that doubles
    while it keeps failing; when the backoff is over it is let back in, and
    the next call re-checks it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: Below Kubernetes' default terminationGracePeriodSeconds (30 s), leaving the server time to stop.
DEFAULT_TIMEOUT_S = 20.0
#: A drain lasts at least this long after consumers were told, so requests already on the wire arrive.
DEFAULT_SETTLE_S = 1.0


class DrainPhase(StrEnum):
    IDLE = "IDLE"  # serving, no drain asked for
    DRAINING = "DRAINING"  # consumers told; waiting for in-flight requests
    DRAINED = "DRAINED"  # nothing in flight any more: the server may stop
    TIMED_OUT = "TIMED_OUT"  # the timeout came first: the server stops anyway
    CANCELLED = "CANCELLED"  # `online` undid the drain before it finished

    @property
    def finished(self) -> bool:
        return self in (DrainPhase.DRAINED, DrainPhase.TIMED_OUT)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    timeout_s: float = DEFAULT_TIMEOUT_S
    settle_s: float = DEFAULT_SETTLE_S

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"drain timeout must be a positive number of seconds; got {self.timeout_s!r}")
        if not 0 <= self.settle_s <= self.timeout_s:
            raise ValueError(f"drain settle time must be within 0..timeout ({self.timeout_s}); got {self.settle_s!r}")


class Drain:
    """One drain of one instance; `observe` the in-flight count until it is `finished`."""

    def __init__(self, settings: DrainSettings = DrainSettings()) -> None:
        self.settings = settings
        self.phase = DrainPhase.IDLE
        self.started_at = 0.0
        self.ended_at = 0.0
        self.in_flight = 0

    def begin(self, now: float) -> bool:
        """Start draining; False when a drain is already under way or over (it is not restarted)."""
        if self.phase not in (DrainPhase.IDLE, DrainPhase.CANCELLED):
            return False
        self.phase = DrainPhase.DRAINING
        self.started_at = now
        self.ended_at = 0.0
        return True

    def observe(self, in_flight: int, now: float) -> DrainPhase:
        """Record the requests in flight now; the phase that follows."""
        if self.phase != DrainPhase.DRAINING:
            return self.phase
        self.in_flight = in_flight
        elapsed = now - self.started_at
        if in_flight <= 0 and elapsed >= self.settings.settle_s:
            self._end(DrainPhase.DRAINED, now)
        elif elapsed >= self.settings.timeout_s:
            self._end(DrainPhase.TIMED_OUT, now)
        return self.phase

    def cancel(self, now: float) -> bool:
        """Undo a drain that has not finished; False when there is none to undo."""
        if self.phase != DrainPhase.DRAINING:
            return False
        self._end(DrainPhase.CANCELLED, now)
        return True

    def next_check_in(self, now: float, poll_s: float) -> float:
        """How long to wait before observing again: `poll_s`, or less when the timeout is nearer."""
        remaining = self.started_at + self.settings.timeout_s - now
        return max(0.0, min(poll_s, remaining))

    def progress(self, now: float) -> dict[str, Any]:
        """What `POST /offline` answers: the phase, the last in-flight count, the seconds so far and left."""
        end = self.ended_at if self.ended_at else now
        elapsed = end - self.started_at if self.phase != DrainPhase.IDLE else 0.0
        return {
            "phase": str(self.phase),
            "in_flight": self.in_flight,
            "elapsed_s": round(elapsed, 3),
            "timeout_s": self.settings.timeout_s,
            "remaining_s": round(max(0.0, self.settings.timeout_s - elapsed), 3) if self.phase == DrainPhase.DRAINING else 0.0,
        }

    def _end(self, phase: DrainPhase, now: float) -> None:
        self.phase = phase
        self.ended_at = now


Consumer = tuple[str, str]  # (service, admin address host:port)


class RecentConsumers:
    """Consumers that called recently: at most `capacity`, each kept `ttl_s` after it was last seen.

    `seen` is on the request path: a consumer seen again within `refresh_s` is
    not touched (no lock, one dict read), so a busy caller costs next to nothing.
    """

    def __init__(self, capacity: int = 256, ttl_s: float = 300.0, refresh_s: float = 1.0) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("recent consumers: capacity must be >= 1 and ttl_s > 0")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._seen: OrderedDict[Consumer, float] = OrderedDict()
        self.changes = 0  # bumped when the set changes, so a writer can skip unchanged copies

    def seen(self, service: str, admin: str, now: float) -> None:
        key = (service, admin)
        last = self._seen.get(key)
        if last is not None and now - last < self.refresh_s:
            return
        with self._lock:
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            self.changes += 1

    def merge(self, entries: Iterable[tuple[str, str, float]]) -> None:
        """Add consumers seen elsewhere (another worker), keeping the later sighting of each."""
        with self._lock:
            for service, admin, at in sorted(entries, key=lambda e: e[2]):
                key = (service, admin)
                if at >= self._seen.get(key, float("-inf")):
                    self._seen[key] = at
                    self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            self.changes += 1

    def current(self, now: float) -> list[tuple[str, str, float]]:
        """(service, admin, last seen) of every consumer seen within the time to live, most recent first."""
        with self._lock:
            return [(s, a, at) for (s, a), at in reversed(self._seen.items()) if now - at < self.ttl_s]


@dataclass(slots=True)
class _Ejected:
    until: float
    backoff_s: float


class Ejections:
    """Passive ejection of instances (keys) whose connections fail, with a doubling backoff.

    `eject` takes an instance out until `now + backoff`; `due` lists those
    whose backoff is over, to let back in (the next call to one re-checks it:
    a new failure ejects it again for twice as long); `succeeded` forgets an
    instance's history once a call to it worked.
    """

    def __init__(self, base_s: float = 1.0, max_s: float = 30.0) -> None:
        if not 0 < base_s <= max_s:
            raise ValueError("ejection backoff: need 0 < base_s <= max_s")
        self.base_s = base_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._out: dict[str, _Ejected] = {}
        self._history: dict[str, float] = {}  # key -> the backoff of its last ejection, until it succeeds
        self.next_due = float("inf")  # earliest `until`: the request path compares one float

    def eject(self, key: str, now: float) -> bool:
        """Take `key` out; False when it is out already."""
        with self._lock:
            if key in self._out:
                return False
            previous = self._history.get(key)
            backoff = self.base_s if previous is None else min(previous * 2, self.max_s)
            self._history[key] = backoff
            self._out[key] = _Ejected(now + backoff, backoff)
            self.next_due = min(self.next_due, now + backoff)
            return True

    def is_out(self, key: str) -> bool:
        return key in self._out

    def due(self, now: float) -> list[str]:
        """Keys whose backoff is over; they are no longer out (their history stays until `succeeded`)."""
        if now < self.next_due:
            return []
        with self._lock:
            ready = [k for k, e in self._out.items() if e.until <= now]
            for key in ready:
                del self._out[key]
            self.next_due = min((e.until for e in self._out.values()), default=float("inf"))
            return ready

    def succeeded(self, key: str) -> None:
        if key in self._history and key not in self._out:
            with self._lock:
                self._history.pop(key, None)

    def forget(self, key: str) -> None:
        with self._lock:
            self._out.pop(key, None)
            self._history.pop(key, None)
            self.next_due = min((e.until for e in self._out.values()), default=float("inf"))
