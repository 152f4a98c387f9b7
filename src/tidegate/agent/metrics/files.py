"""How worker processes' statistics reach the one admin endpoint of their server.

The process that owns the listening socket shares a directory with its
workers (`tidegate.agent.capability.SHARED_DIR_ENV`, made by the lifecycle
before they start; forked or spawned, they inherit it). Each worker rewrites
`<pid>.json` there about once a second, atomically; the owner's `/metrics`
sums every file with its own numbers. Files of workers that have exited stay,
so counters never go backwards when a worker is replaced; only live workers
count towards in-flight.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from tidegate.agent.forking import process_alive

FLUSH_INTERVAL_S = 1.0

log = logging.getLogger("tidegate")


class Snapshots(Protocol):
    """What a writer reads (`tidegate.agent.metrics.AgentMetrics`)."""

    generation: int

    @property
    def in_flight(self) -> int: ...

    def snapshot(self) -> dict[str, Any]: ...


def read_all(directory: Path, skip_pid: int) -> list[dict[str, Any]]:
    """Every worker's last snapshot (`<pid>.json`; the drain board's files in the same
    directory are not snapshots); in-flight zeroed for workers no longer alive."""
    snapshots = []
    for file in directory.glob("*.json"):
        if not file.stem.isdigit():
            continue
        try:
            snap = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now, or removed: the next scrape sees it
        pid = int(snap.get("pid", 0))
        if pid == skip_pid:
            continue
        if not process_alive(pid):
            snap["in_flight"] = 0
        snapshots.append(snap)
    return snapshots


class SnapshotWriter:
    """A daemon thread of a worker that keeps `<dir>/<pid>.json` current."""

    def __init__(self, metrics: Snapshots, directory: Path, interval: float = FLUSH_INTERVAL_S) -> None:
        self._metrics = metrics
        self._directory = directory
        self._interval = interval
        self._stop = threading.Event()
        self._written: tuple[int, int] | None = None  # (generation, in-flight) of the last file written
        self._thread = threading.Thread(target=self._run, name="tidegate-metrics-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        self._stop.set()
        self.flush()

    def flush(self) -> None:
        version = (self._metrics.generation, self._metrics.in_flight)
        if version == self._written:
            return
        snap = self._metrics.snapshot()
        target = self._directory / f"{snap['pid']}.json"
        try:
            temp = target.with_suffix(".tmp")
            temp.write_text(json.dumps(snap))
            os.replace(temp, target)
            self._written = version
        except OSError:
            log.debug("tidegate: cannot write worker metrics to %s", self._directory, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
