"""The recent changes, by revision, and whether a watcher can resume from them.

A watcher that reconnects says the last revision it applied. If every change
after it is still in the log, it gets those changes replayed; otherwise (it is
too far behind, or it comes from before a restart) it gets a fresh snapshot.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The response header of `GET /v1/watch` naming the log's head when the stream opened: the
#: stream's snapshot and changes reach at least that revision, so a watcher that applied up to
#: it is current (`tidegate.client.watch.Watcher.wait_synced`).
HEAD_HEADER = "X-Tidegate-Head"


@dataclass(frozen=True, slots=True)
class Change:
    """One change at one revision, with its Server-Sent Events frame encoded once."""

    revision: int
    event: str  # "instance" or "rule"
    data: Mapping[str, Any]
    frame: bytes


def encode_frame(event: str, revision: int, data: Mapping[str, Any]) -> bytes:
    """An SSE frame: `event:`, `id:` and a one-line JSON `data:`."""
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\nid: {revision}\ndata: {body}\n\n".encode()


class EventLog:
    """The last `capacity` changes. `floor` is the revision the log covers from:
    every change with a revision above it is here."""

    def __init__(self, floor: int, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("event log capacity must be at least 1")
        self._changes: deque[Change] = deque()
        self._capacity = capacity
        self.floor = floor
        self.head = floor

    def append(self, revision: int, event: str, data: Mapping[str, Any], joins: bool = False) -> Change:
        """Add the change at `revision`, after the head; or, `joins`, one more change at the
        head's revision (an etcd transaction writes several documents at one revision)."""
        if revision < self.head or (revision == self.head and not (joins and self._changes)):
            raise ValueError(f"revision {revision} is not after the log's head {self.head}")
        change = Change(revision, event, data, encode_frame(event, revision, data))
        self._changes.append(change)
        self.head = revision
        while len(self._changes) > self._capacity:
            self.floor = self._changes.popleft().revision
        return change

    def advance(self, revision: int) -> None:
        """Move head and floor to `revision` for changes that cannot be replayed
        (a restart dropped every instance): older watchers must take a snapshot."""
        self._changes.clear()
        self.floor = self.head = max(self.head, revision)

    def since(self, revision: int) -> list[Change] | None:
        """Changes after `revision` to replay, or None when a snapshot is needed."""
        if revision < self.floor or revision > self.head:
            return None
        newer: list[Change] = []
        for change in reversed(self._changes):  # the tail is what a live watcher misses
            if change.revision <= revision:
                break
            newer.append(change)
        newer.reverse()
        return newer
