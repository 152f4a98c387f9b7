"""Redis Streams lane claims against a real Redis, in process: redelivery keeps a message, the other side drops it.

The instrumentor is applied once for the module with a base runtime, then
pointed at a gray one, so both sides of one stream are seen from here.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.redis import INSTRUMENTOR, LANE_FIELD, StreamLanes, lane_of
from tidegate.agent.runtime import AgentRuntime
from tidegate.core import context

REDIS = os.environ.get("TIDEGATE_TEST_REDIS")


def runtime(tag: str) -> AgentRuntime:
    return AgentRuntime(config=AgentConfig(service="billing", tag=tag))


@pytest.fixture(scope="module")
def instrumented() -> Iterator[None]:
    INSTRUMENTOR.instrument(runtime(""))
    try:
        yield
    finally:
        INSTRUMENTOR.uninstrument()


def ids(reply: Any) -> list[bytes]:
    return [message_id for _, messages in (reply.items() if isinstance(reply, dict) else reply or ()) for message_id, _ in messages]


def test_plan_decisions_without_a_server() -> None:
    base = StreamLanes("", "billing", lambda: {"gray"})
    reply = [
        [
            b"s",
            [
                (b"1-0", {b"order": b"a"}),
                (b"2-0", {b"order": b"b", LANE_FIELD.encode(): b"gray"}),
                (b"3-0", {b"order": b"c", LANE_FIELD.encode(): b"blue"}),
            ],
        ]
    ]
    plan = base.plan(b"g", reply)
    assert plan.drop == {b"s": [b"2-0"]}  # gray has live consumers: theirs
    assert [mid for _, mid, _ in plan.claims] == [b"3-0"]  # blue has none: ours, once claimed
    assert plan.claims[0][2] == "tidegate:lane-claim:s:g:3-0"
    gray = StreamLanes("gray", "billing", lambda: set())
    plan = gray.plan(b"g@gray", reply)
    assert plan.drop == {b"s": [b"1-0", b"3-0"]}
    assert plan.claims == [(b"s", b"2-0", "tidegate:lane-claim:s:g:2-0")]
    assert base.owns(None) and base.owns(b"base") and not base.owns(b"lane:gray")
    assert lane_of({LANE_FIELD: "%bad"}) == "" and lane_of(None) == ""


@pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (scripts/test.sh sets it)")
def test_a_claimed_message_is_redelivered_to_its_side_and_dropped_by_the_other(instrumented: None) -> None:
    import redis

    client = redis.Redis.from_url(str(REDIS))
    stream = f"claims-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "billing", id="0", mkstream=True)
    token = context.enter(context.RequestContext(lane="gray"))
    try:
        gray_id = client.xadd(stream, {"order": "g1"})
    finally:
        context.leave(token)
    base_id = client.xadd(stream, {"order": "b1"})
    assert client.xrange(stream)[0][1][LANE_FIELD.encode()] == b"gray"

    INSTRUMENTOR.runtime = runtime("")  # base, no live gray consumer: takes both
    assert ids(client.xreadgroup("billing", "c1", {stream: ">"})) == [gray_id, base_id]
    # not acknowledged: the pending list redelivers both, the claim is still ours
    assert ids(client.xreadgroup("billing", "c1", {stream: "0"})) == [gray_id, base_id]

    INSTRUMENTOR.runtime = runtime("gray")  # a gray consumer arrives late: group billing@gray from the start
    try:
        assert ids(client.xreadgroup("billing", "c2", {stream: ">"})) == []
        assert client.xpending(stream, "billing")["pending"] == 0  # renamed: billing@gray's, all acked there
    finally:
        INSTRUMENTOR.runtime = runtime("")
    assert client.xpending(stream, "billing")["pending"] == 2
    client.delete(stream)


@pytest.mark.skipif(not REDIS, reason="TIDEGATE_TEST_REDIS is not set (scripts/test.sh sets it)")
def test_the_asyncio_client_takes_its_lane_and_leaves_base_messages(instrumented: None) -> None:
    import redis.asyncio

    async def scenario() -> tuple[list[bytes], bytes]:
        client = redis.asyncio.Redis.from_url(str(REDIS))
        stream = f"claims-{uuid.uuid4().hex[:8]}"
        await client.xgroup_create(stream, "billing", id="0", mkstream=True)
        token = context.enter(context.RequestContext(lane="gray"))
        try:
            gray_id = await client.xadd(stream, {"order": "g1"})
        finally:
            context.leave(token)
        await client.xadd(stream, {"order": "b1"})
        INSTRUMENTOR.runtime = runtime("gray")
        try:
            taken = ids(await client.xreadgroup("billing", "c2", {stream: ">"}))
        finally:
            INSTRUMENTOR.runtime = runtime("")
        await client.delete(stream)
        await (client.aclose() if hasattr(client, "aclose") else client.close())  # redis < 5: close()
        return taken, gray_id

    taken, gray_id = asyncio.run(scenario())
    assert taken == [gray_id]
