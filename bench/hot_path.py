"""Cost of guarding one call: tidegate's entry + exit against pybreaker + limits, same run.

Guarded call: a trivial function, protected by one QPS flow rule (threshold
high enough never to refuse), one error-ratio circuit breaker and the
resource's statistics, with `time.monotonic()` as the clock (as the edge calls
it: once at entry, once at exit).

Anchor (peers): the same function through `pybreaker.CircuitBreaker.call`,
after `limits`' `FixedWindowRateLimiter(MemoryStorage()).hit(...)` for a
per-second limit: the common Python way to get a breaker and a rate limit.

Each side runs ROUNDS rounds of LOOPS calls, interleaved; the median round is
reported in microseconds per call, and ratio = peers_us / tidegate_us.

    .venv/bin/python bench/hot_path.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import pybreaker
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from tidegate.core.breaker import BreakerRule
from tidegate.core.flow import FlowRule
from tidegate.core.governor import Governor

ROUNDS = int(os.environ.get("HOT_PATH_ROUNDS", "9"))
LOOPS = int(os.environ.get("HOT_PATH_LOOPS", "100000"))


def work() -> int:
    return 1


def tidegate_loop() -> Callable[[int], None]:
    governor = Governor()
    governor.load_flow_rules([FlowRule("orders.get", 1e12, name="qps")])
    governor.load_breaker_rules([BreakerRule("orders.get", "error_ratio", 0.5, name="errors")])
    monotonic = time.monotonic
    entry = governor.entry

    def run(loops: int) -> None:
        for _ in range(loops):
            guard = entry("orders.get", monotonic())
            try:
                work()
            except Exception:
                guard.exit(monotonic(), True)
                raise
            guard.exit(monotonic())

    return run


def peers_loop() -> Callable[[int], None]:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    limiter = FixedWindowRateLimiter(MemoryStorage())
    limit = parse("1000000000/second")
    hit = limiter.hit
    call = breaker.call

    def run(loops: int) -> None:
        for _ in range(loops):
            if not hit(limit, "orders.get"):
                raise RuntimeError("rate limited")
            call(work)

    return run


def per_call_us(run: Callable[[int], None]) -> float:
    start = time.perf_counter()
    run(LOOPS)
    return (time.perf_counter() - start) / LOOPS * 1e6


def main() -> None:
    ours, peers = tidegate_loop(), peers_loop()
    ours(LOOPS // 10)
    peers(LOOPS // 10)
    ours_rounds: list[float] = []
    peer_rounds: list[float] = []
    for _ in range(ROUNDS):
        ours_rounds.append(per_call_us(ours))
        peer_rounds.append(per_call_us(peers))
    tidegate_us = statistics.median(ours_rounds)
    peers_us = statistics.median(peer_rounds)
    ratio = peers_us / tidegate_us
    print(f"tidegate entry+exit (1 flow rule, 1 breaker, stats): {tidegate_us:.3f} µs/call (median of {ROUNDS} x {LOOPS})")
    print(f"pybreaker.call + limits FixedWindow hit (anchor):      {peers_us:.3f} µs/call")
    print(f"ratio peers / tidegate: {ratio:.2f}x")
    print(json.dumps({"tidegate_us": round(tidegate_us, 3), "peers_us": round(peers_us, 3), "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
