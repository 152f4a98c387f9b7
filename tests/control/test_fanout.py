"""Fan-out of encoded frames to watcher queues."""

from __future__ import annotations

import asyncio

from tidegate.control.fanout import Fanout


def test_every_watcher_gets_the_same_frame_and_a_slow_one_is_cut_off() -> None:
    async def scenario() -> None:
        fanout = Fanout(queue_limit=2)
        fast, slow = fanout.subscribe(), fanout.subscribe()
        fanout.publish(b"one")
        assert fast.get_nowait() == b"one"
        fanout.publish(b"two")
        assert fast.get_nowait() == b"two"
        fanout.publish(b"three")  # slow holds two frames already: it is cut off
        assert [slow.get_nowait() for _ in range(3)] == [b"one", b"two", None]
        assert fast.get_nowait() == b"three"
        assert len(fanout) == 1
        fanout.close_all()
        assert fast.get_nowait() is None and len(fanout) == 0

    asyncio.run(scenario())


def test_unsubscribed_watchers_get_nothing() -> None:
    async def scenario() -> None:
        fanout = Fanout()
        queue = fanout.subscribe()
        fanout.unsubscribe(queue)
        fanout.publish(b"x")
        assert queue.empty()

    asyncio.run(scenario())
