"""The governor's counters and pacing under concurrent threads (a threaded server, a free-threaded build).

A `+= 1` is a read, an add and a write; a throttling slot is a read and a
write. Here the add itself is made slow (an int or float whose `+` sleeps, so
the GIL is released inside it, as a free-threaded build or an unlucky switch
would interleave it), and every thread starts at once: a lost update or a
shared slot shows at once, without timing anything.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from tidegate.core.flow import FlowRule, ThrottlingChecker
from tidegate.core.governor import Entry, Governor
from tidegate.core.hotspot import HotspotLimiter, HotspotRule
from tidegate.errors import BlockedError

THREADS = 8


class SlowInt(int):
    def __add__(self, other: int) -> SlowInt:  # type: ignore[override]
        time.sleep(0.0005)
        return SlowInt(int(self) + other)

    def __sub__(self, other: int) -> SlowInt:  # type: ignore[override]
        time.sleep(0.0005)
        return SlowInt(int(self) - other)


class SlowFloat(float):
    def __add__(self, other: float) -> float:  # type: ignore[override]
        time.sleep(0.0005)
        return float(self) + other


def together(work: Callable[[], None]) -> None:
    """Run `work` in THREADS threads started at once."""
    barrier = threading.Barrier(THREADS)

    def run() -> None:
        barrier.wait()
        work()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrency_counts_lose_no_entry_or_exit() -> None:
    gov = Governor()
    gov.load_flow_rules([FlowRule("r", 1000, grade="concurrency")])
    gov.entry("r", 1.0).exit(1.0)
    node = gov.stat_node("r")
    assert node is not None
    node.concurrency = SlowInt(0)

    entries: list[Entry] = []

    def enter() -> None:
        for _ in range(10):
            entries.append(gov.entry("r", 1.0))

    together(enter)
    assert node.concurrency == THREADS * 10  # each lost increment would show here (lost and duplicated ones cannot cancel)

    def leave() -> None:
        for _ in range(10):
            entries.pop().exit(1.0)

    together(leave)
    assert node.concurrency == 0


def test_a_throttling_slot_is_taken_by_one_thread_only() -> None:
    checker = ThrottlingChecker(1.0, 0.0)  # 10 per second, no queue: one call per 100 ms
    checker.last_passed = SlowFloat(-math.inf)
    passed: list[float] = []

    def call() -> None:
        wait = checker.check(None, 1000, 1.0, 10.0)  # type: ignore[arg-type]  # the checker reads no node
        if wait == 0.0:
            passed.append(wait)

    together(call)
    assert len(passed) == 1


def test_a_throttled_resource_passes_one_call_per_slot_through_the_governor() -> None:
    gov = Governor()
    gov.load_flow_rules([FlowRule("r", 10, behavior="throttle", max_queue_s=0.0)])
    checker = gov._slot("r").flow[0].checker
    assert isinstance(checker, ThrottlingChecker)
    checker.last_passed = SlowFloat(-math.inf)
    passed: list[int] = []

    def call() -> None:
        try:
            gov.entry("r", 1.0).exit(1.0)
            passed.append(1)
        except BlockedError:
            pass

    together(call)
    assert len(passed) == 1


class SlowStr(str):
    __slots__ = ()

    def __hash__(self) -> int:
        time.sleep(0.0002)
        return str.__hash__(self)


def test_hot_values_evicted_by_another_thread_never_raise() -> None:
    limiter = HotspotLimiter(HotspotRule("r", "q", 1000, capacity=2))
    errors: list[BaseException] = []

    def calls() -> None:
        try:
            for i in range(300):
                limiter.try_pass(SlowStr(f"v{i % 3}"), 1000 + i)  # three hot values, room for two
        except BaseException as error:  # a KeyError from moving a value another thread evicted
            errors.append(error)

    together(calls)
    assert errors == [] and len(limiter.values) <= 2
