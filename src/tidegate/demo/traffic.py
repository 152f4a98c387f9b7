"""Open-loop traffic for demo scenes: a fixed rate of calls, whatever the answers' pace.

Open loop (requests leave on schedule, not when the previous one returns) is
what real users do, and it is what exposes a slow or missing instance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from tidegate.demo.cluster import DemoError

Call = Callable[[int], Awaitable[str]]  # returns the outcome label of request i


async def instance_of(client: httpx.AsyncClient, url: str) -> str:
    """GET `url` of a demo service: the name of the instance that answered (DemoError unless HTTP 200)."""
    response = await client.get(url)
    if response.status_code != 200:
        raise DemoError(f"HTTP {response.status_code}")
    return str(response.json()["instance"])


@dataclass
class TrafficResult:
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_open_loop(call: Call, rate: float, seconds: float, on_tick: Callable[[float], None] | None = None) -> TrafficResult:
    """Start `rate` calls per second for `seconds`; wait for the last to finish."""
    result = TrafficResult()
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            outcome = await call(i)
            result.outcomes[outcome] += 1
        except Exception as error:  # every failure is counted, none stops the traffic
            result.failures[type(error).__name__ + (f": {error}" if str(error) else "")] += 1
        finally:
            result.latencies_s.append(time.perf_counter() - started)

    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.sent += 1
        if on_tick is not None:
            on_tick((i + 1) / total)
    if tasks:
        await asyncio.gather(*tasks)
    return result
