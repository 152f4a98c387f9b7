"""Push each change to every connected watcher: one asyncio queue per watcher.

A change's frame is encoded once and the same bytes go into every queue. A
watcher that falls too far behind is cut off (its queue gets `None`); it
reconnects and resumes from its last revision or takes a snapshot.
"""

from __future__ import annotations

import asyncio

#: Frames a watcher may have pending before it is cut off.
QUEUE_LIMIT = 10_000


class Fanout:
    """The set of live watcher queues."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self._queue_limit = queue_limit

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        # Unbounded so put_nowait never raises; the limit is enforced in publish.
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(queue)

    def publish(self, frame: bytes) -> None:
        for queue in list(self._queues):
            if queue.qsize() >= self._queue_limit:
                self._queues.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(frame)

    def close_all(self) -> None:
        """Tell every watcher's stream to end (server shutting down)."""
        for queue in self._queues:
            queue.put_nowait(None)
        self._queues.clear()

    def __len__(self) -> int:
        return len(self._queues)
