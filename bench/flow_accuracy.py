"""How exactly a QPS rule holds under overload: real threads, the real clock.

One flow rule (threshold 200 calls per second, reject) on one resource;
THREADS threads offer 5x the threshold between them, each pacing its calls
on an absolute schedule, entering with `time.monotonic()` and exiting at once
(as a guarded call that does no work). The figure is the passed calls per
second over the measured span (after one second of warm-up), against the
threshold as the anchor: error_pct = (passed_qps - threshold) / threshold x 100.

    .venv/bin/python bench/flow_accuracy.py              # 30 s
    FLOW_ACCURACY_SECONDS=5 .venv/bin/python bench/flow_accuracy.py   # smoke run
"""

from __future__ import annotations

import json
import os
import threading
import time

from tidegate.core.flow import FlowRule
from tidegate.core.governor import Governor
from tidegate.errors import FlowBlockedError

THRESHOLD = 200
OVERLOAD = 5
THREADS = 4
WARMUP_S = 1.0
SECONDS = float(os.environ.get("FLOW_ACCURACY_SECONDS", "30"))


def offer(governor: Governor, rate: float, start: float, measure_from: float, stop: float, tally: list[int]) -> None:
    """Call at `rate` per second until `stop`; tally [passed, offered] inside the measured span."""
    interval = 1.0 / rate
    due = start
    passed = offered = 0
    monotonic = time.monotonic
    while True:
        now = monotonic()
        if now >= stop:
            break
        if now < due:
            time.sleep(due - now)
            now = monotonic()
        due += interval
        counted = now >= measure_from
        try:
            entry = governor.entry("orders.list", now)
        except FlowBlockedError:
            offered += counted
            continue
        entry.exit(monotonic())
        offered += counted
        passed += counted
    tally[0] += passed
    tally[1] += offered


def main() -> None:
    governor = Governor()
    governor.load_flow_rules([FlowRule("orders.list", THRESHOLD, name="qps-200")])
    start = time.monotonic() + 0.1
    measure_from = start + WARMUP_S
    stop = measure_from + SECONDS
    tallies = [[0, 0] for _ in range(THREADS)]
    rate = THRESHOLD * OVERLOAD / THREADS
    threads = [threading.Thread(target=offer, args=(governor, rate, start, measure_from, stop, tally)) for tally in tallies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    passed = sum(t[0] for t in tallies)
    offered = sum(t[1] for t in tallies)
    passed_qps = passed / SECONDS
    offered_qps = offered / SECONDS
    error_pct = (passed_qps - THRESHOLD) / THRESHOLD * 100.0
    print(f"threshold (anchor): {THRESHOLD} calls/s; offered {offered_qps:.1f} calls/s from {THREADS} threads over {SECONDS:g} s")
    print(f"passed: {passed_qps:.2f} calls/s, error {error_pct:+.2f}%")
    print(
        json.dumps(
            {
                "threshold": THRESHOLD,
                "passed_qps": round(passed_qps, 2),
                "error_pct": round(error_pct, 2),
                "offered_qps": round(offered_qps, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
