"""Saturation readings for adaptive protection: event-loop lag and CPU usage, fed to the Governor.

- Event-loop lag (asyncio servers): a task sleeps `interval_s` and measures how
  much later than asked it woke up; a loop busy with CPU-bound handlers wakes
  it late. The reading is the largest of the last `samples` (1 s by default),
  so one long block is seen for a second, not for one tick.
- CPU usage: the process's CPU time over wall time, sampled every `interval_s`
  by a daemon thread. A Python process runs Python on one core at a time (the
  GIL), so 1.0 means the process is saturated whatever the machine's cores.

Both start lazily, from the first inbound request seen while an adaptive rule
is in force, so a process without adaptive rules runs no sampler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.core.governor import Governor

LAG_INTERVAL_S = 0.1
LAG_SAMPLES = 10
CPU_INTERVAL_S = 0.5


class LoopLagSampler:
    """Measures the lag of the event loop it is first ensured from."""

    def __init__(self, governor: Governor, interval_s: float = LAG_INTERVAL_S, samples: int = LAG_SAMPLES) -> None:
        self.governor = governor
        self.interval_s = interval_s
        self._recent: deque[float] = deque(maxlen=samples)
        self._task: asyncio.Task[None] | None = None

    def ensure(self) -> None:
        """From inside a running loop: start sampling it, once."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tidegate-loop-lag")

    async def _run(self) -> None:
        interval = self.interval_s
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            self._recent.append(max(0.0, time.monotonic() - before - interval))
            self.governor.observe(loop_lag_s=max(self._recent))


class CpuSampler:
    """Samples this process's CPU usage (0..1 of one core) from a daemon thread."""

    def __init__(self, governor: Governor, interval_s: float = CPU_INTERVAL_S) -> None:
        self.governor = governor
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tidegate-cpu", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    def _run(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        stop = self._stop
        while not stop.wait(self.interval_s):
            now_wall, now_cpu = time.monotonic(), time.process_time()
            elapsed = now_wall - wall
            if elapsed > 0:
                self.governor.observe(cpu_usage=min(1.0, (now_cpu - cpu) / elapsed))
            wall, cpu = now_wall, now_cpu
