"""How a server's workers and the process that owns its socket share drain news, through files.

The owner (single uvicorn, uvicorn's supervisor, gunicorn's arbiter) runs the
drain and receives direct drain notices, but the workers serve the requests
and make the calls. They share the directory the owner exports as
TIDEGATE_METRICS_DIR (forked and spawned workers both inherit it):

  - `drain-board.json`, written by the owner: when its drain began (0: not
    draining) and the drain notices it received from providers;
  - `drain-<pid>.json`, written by each worker: which drain it has seen, its
    requests in flight while draining, and the consumers that called it.

Files are replaced atomically; a worker looks at the board every `POLL_S`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tidegate.agent.forking import process_alive

log = logging.getLogger("tidegate")

BOARD = "drain-board.json"
POLL_S = 0.05
MAX_NOTICES = 64

Notice = tuple[str, str, float]  # (instance id, address host:port, when told, epoch seconds)


def write_json(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OwnerBoard:
    """The owner's side: publish the drain and the notices, read the workers' reports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.draining_since = 0.0
        self.notices: list[Notice] = []

    def publish(self) -> None:
        try:
            write_json(self.directory / BOARD, {"draining": self.draining_since, "notices": self.notices[-MAX_NOTICES:]})
        except OSError:
            log.warning("tidegate: cannot write the drain board in %s; workers will not see it", self.directory, exc_info=True)

    def add_notice(self, instance_id: str, address: str, at: float) -> None:
        self.notices = [*self.notices[-(MAX_NOTICES - 1) :], (instance_id, address, at)]
        self.publish()

    def reports(self) -> list[dict[str, Any]]:
        """Each live worker's last report."""
        found = []
        for path in self.directory.glob("drain-*.json"):
            if path.name == BOARD:
                continue
            report = read_json(path)
            if report is not None and process_alive(int(report.get("pid", 0))):
                found.append(report)
        return found

    def workers_in_flight(self, since: float) -> int:
        """Requests in flight in the workers; a live worker that has not yet seen the drain begun
        at `since` counts as one (its count is not known yet)."""
        total = 0
        for report in self.reports():
            if float(report.get("ack", 0)) != since:
                total += 1
            else:
                total += max(0, int(report.get("in_flight", 0)))
        return total


class WorkerBoard:
    """A worker's side: notice changes on the board, report back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / BOARD
        self.report_path = directory / f"drain-{os.getpid()}.json"
        self._stamp: tuple[int, int] | None = None
        self._last_report: dict[str, Any] | None = None

    def changed(self) -> dict[str, Any] | None:
        """The board when it changed since the last look, else None."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp == self._stamp:
            return None
        board = read_json(self.path)
        if board is not None:
            self._stamp = stamp
        return board

    def report(self, data: dict[str, Any]) -> None:
        if data == self._last_report:
            return
        try:
            write_json(self.report_path, {"pid": os.getpid(), **data})
            self._last_report = data
        except OSError:
            log.debug("tidegate: cannot write the drain report %s", self.report_path, exc_info=True)
