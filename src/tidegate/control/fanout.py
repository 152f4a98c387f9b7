"""Push each change to every connected watcher: one bounded backlog per watcher.

A change's frame is encoded once and the same bytes object goes into every
backlog. A watcher whose backlog passes its byte bound (it does not read, or
reads too slowly) is cut off: its backlog is dropped at once and its stream
ends; it reconnects and resumes from its last revision (the changes it missed
are replayed from the log, or it takes a snapshot).
"""

from __future__ import annotations

import asyncio
from collections import deque

from tidegate.control.limits import WATCHER_BACKLOG_BYTES


class Subscriber:
    """One watcher's pending frames, at most `limit` bytes of them."""

    __slots__ = ("_frames", "_bytes", "_limit", "_wakeup", "ended", "cut_off")

    def __init__(self, limit: int) -> None:
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._limit = limit
        self._wakeup = asyncio.Event()
        self.ended = False
        self.cut_off = False

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def push(self, frame: bytes) -> bool:
        """Queue `frame`; False (and nothing queued) when it would pass the bound."""
        if self._bytes + len(frame) > self._limit and self._frames:
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        self._wakeup.set()
        return True

    def end(self, cut_off: bool = False) -> None:
        """End the stream: what is pending is dropped, `take` returns None."""
        self.ended = True
        self.cut_off = cut_off
        self._frames.clear()
        self._bytes = 0
        self._wakeup.set()

    async def take(self, max_bytes: int) -> bytes | None:
        """The pending frames, joined, up to `max_bytes` (at least one frame); None once ended."""
        while not self._frames:
            if self.ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.ended:
            return None
        batch = [self._frames.popleft()]
        size = len(batch[0])
        while self._frames and size + len(self._frames[0]) <= max_bytes:
            frame = self._frames.popleft()
            batch.append(frame)
            size += len(frame)
        self._bytes -= size
        return batch[0] if len(batch) == 1 else b"".join(batch)


class Fanout:
    """The set of live watchers."""

    def __init__(self, backlog_bytes: int = WATCHER_BACKLOG_BYTES) -> None:
        self._subscribers: set[Subscriber] = set()
        self._backlog_bytes = backlog_bytes
        self.cut_offs = 0

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self._backlog_bytes)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, frame: bytes) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.push(frame):
                self._subscribers.discard(subscriber)
                subscriber.end(cut_off=True)
                self.cut_offs += 1

    def close_all(self) -> None:
        """Tell every watcher's stream to end (server shutting down)."""
        for subscriber in self._subscribers:
            subscriber.end()
        self._subscribers.clear()

    def __len__(self) -> int:
        return len(self._subscribers)
