"""One encoded snapshot shared by every watcher that needs one, built off the event loop.

A watcher that cannot resume from the change log takes a snapshot: the whole
registry and rule set, which at tens of thousands of instances is megabytes of
JSON. Encoding it once per watcher on the event loop stalls every other request
and multiplies the memory. Here the state is captured on the loop (references
only: instances are immutable), encoded once in a worker thread, a slice of
instances at a time so the loop keeps running, and the same bytes are streamed
to every watcher; a later watcher takes the newest snapshot and the changes
after it from the log, so a snapshot is rebuilt only when the log no longer
covers it or `reuse_changes` changes have piled up on top of it. Watchers
that may not see every field (a read-role caller: no `notice_key`) share one
redacted copy of a snapshot, made in the same thread when the first asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tidegate.control.eventlog import EventLog
from tidegate.core.instance import Instance

#: Instances encoded per step of a build (between steps the thread lets the loop run).
ENCODE_SLICE = 500
#: A built snapshot is reused while at most this many changes came after it.
REUSE_CHANGES = 1000


@dataclass(frozen=True, slots=True)
class EncodedSnapshot:
    """A snapshot at `revision` as one Server-Sent Events frame."""

    revision: int
    frame: bytes


def encode_snapshot(snapshot: Mapping[str, Any], slice_size: int = ENCODE_SLICE) -> EncodedSnapshot:
    """`snapshot` (its `instances` as `Instance` objects, the rest JSON types) as an SSE frame.

    The instances go last and are encoded `slice_size` at a time; every other
    key is encoded as it is (whatever keys the plane puts in a snapshot)."""
    revision = int(snapshot["revision"])
    head = json.dumps({k: v for k, v in snapshot.items() if k != "instances"}, separators=(",", ":"))
    instances: list[Instance] = list(snapshot["instances"])
    parts = [f"event: snapshot\nid: {revision}\ndata: ".encode(), head[:-1].encode(), b',"instances":[']
    for start in range(0, len(instances), slice_size):
        chunk = [instance.to_dict() for instance in instances[start : start + slice_size]]
        if start:
            parts.append(b",")
        parts.append(json.dumps(chunk, separators=(",", ":"))[1:-1].encode())
    parts.append(b"]}\n\n")
    return EncodedSnapshot(revision, b"".join(parts))


class Snapshots:
    """The newest encoded snapshot, and the build in progress (at most one at a time)."""

    def __init__(
        self,
        capture: Callable[[], Mapping[str, Any]],
        log: EventLog,
        reuse_changes: int = REUSE_CHANGES,
        encode: Callable[[Mapping[str, Any]], EncodedSnapshot] = encode_snapshot,
    ) -> None:
        self._capture = capture
        self._log = log
        self._reuse_changes = reuse_changes
        self._encode = encode
        self._ready: EncodedSnapshot | None = None
        self._building: asyncio.Future[EncodedSnapshot] | None = None
        self._building_revision = -1
        self._executor: ThreadPoolExecutor | None = None
        self._redacted: tuple[EncodedSnapshot, asyncio.Future[EncodedSnapshot]] | None = None
        self.builds = 0

    async def get(self) -> EncodedSnapshot:
        """A snapshot that the log's changes can bring up to its head (call on the loop)."""
        if self._ready is not None and self._usable(self._ready.revision):
            return self._ready
        if self._building is None or not self._usable(self._building_revision):
            self._start_build()
        assert self._building is not None
        # Shielded: a watcher that goes away must not cancel the build the others wait on.
        return await asyncio.shield(self._building)

    async def redacted(self, snapshot: EncodedSnapshot, redact: Callable[[bytes], bytes]) -> EncodedSnapshot:
        """`snapshot` with its frame passed through `redact`, made off the loop once per snapshot
        (the newest one asked for) and shared by every watcher that asks (call on the loop)."""
        cached = self._redacted
        if cached is None or cached[0] is not snapshot or (cached[1].done() and not _succeeded(cached[1])):
            future = asyncio.get_running_loop().run_in_executor(
                self._pool(), lambda: EncodedSnapshot(snapshot.revision, redact(snapshot.frame))
            )
            self._redacted = cached = (snapshot, future)
        return await asyncio.shield(cached[1])

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _usable(self, revision: int) -> bool:
        return self._log.floor <= revision <= self._log.head and self._log.head - revision <= self._reuse_changes

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidegate-snapshot")
        return self._executor

    def _start_build(self) -> None:
        snapshot = self._capture()
        revision = int(snapshot["revision"])
        future = asyncio.get_running_loop().run_in_executor(self._pool(), self._encode, snapshot)
        self.builds += 1
        self._building, self._building_revision = future, revision

        def done(finished: asyncio.Future[EncodedSnapshot]) -> None:
            if self._building is finished:
                self._building, self._building_revision = None, -1
            if finished.cancelled() or finished.exception() is not None:
                return  # the watchers waiting on it fail and reconnect; the next one builds anew
            built = finished.result()
            if self._ready is None or built.revision >= self._ready.revision:
                self._ready = built

        future.add_done_callback(done)


def _succeeded(future: asyncio.Future[EncodedSnapshot]) -> bool:
    return not future.cancelled() and future.exception() is None
