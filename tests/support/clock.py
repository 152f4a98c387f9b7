"""One fake clock for every test: time stands still until the test moves it."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock in float seconds that only moves when told to.

    Pass it where code takes a clock (`clock=clock`): calling it gives `now`.
    Move it with `advance(seconds)` (or set `now`). It starts well after 0, so
    deadlines and windows computed as `now - something` stay positive.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock on by `seconds`; returns the new `now`."""
        self.now += seconds
        return self.now
