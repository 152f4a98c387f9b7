"""Fan-out of encoded frames to watcher backlogs, each bounded in bytes."""

from __future__ import annotations

import asyncio

from tidegate.control.fanout import Fanout


def test_every_watcher_gets_the_same_frame_and_a_slow_one_is_cut_off() -> None:
    async def scenario() -> None:
        fanout = Fanout(backlog_bytes=6)
        fast, slow = fanout.subscribe(), fanout.subscribe()
        fanout.publish(b"one")
        assert await fast.take(100) == b"one"
        fanout.publish(b"two")
        assert await fast.take(100) == b"two"
        assert slow.pending_bytes == 6
        fanout.publish(b"three")  # slow holds six bytes already: it is cut off, its backlog dropped
        assert slow.cut_off and slow.pending_bytes == 0
        assert await slow.take(100) is None
        assert await fast.take(100) == b"three"
        assert len(fanout) == 1 and fanout.cut_offs == 1
        fanout.close_all()
        assert await fast.take(100) is None and len(fanout) == 0 and not fast.cut_off

    asyncio.run(scenario())


def test_a_burst_is_taken_in_writes_of_at_most_the_asked_size() -> None:
    async def scenario() -> None:
        fanout = Fanout(backlog_bytes=1000)
        watcher = fanout.subscribe()
        for frame in (b"aaaa", b"bbbb", b"cccc", b"dd"):
            fanout.publish(frame)
        assert await watcher.take(9) == b"aaaabbbb"
        assert await watcher.take(9) == b"ccccdd"
        assert watcher.pending_bytes == 0
        fanout.publish(b"a frame larger than the write size")
        assert await watcher.take(4) == b"a frame larger than the write size"  # one frame goes out whole

    asyncio.run(scenario())


def test_a_watcher_waits_for_the_next_frame() -> None:
    async def scenario() -> None:
        fanout = Fanout()
        watcher = fanout.subscribe()
        waiting = asyncio.create_task(watcher.take(100))
        await asyncio.sleep(0)
        assert not waiting.done()
        fanout.publish(b"x")
        assert await waiting == b"x"

    asyncio.run(scenario())


def test_unsubscribed_watchers_get_nothing() -> None:
    async def scenario() -> None:
        fanout = Fanout()
        watcher = fanout.subscribe()
        fanout.unsubscribe(watcher)
        fanout.publish(b"x")
        assert watcher.pending_bytes == 0

    asyncio.run(scenario())
