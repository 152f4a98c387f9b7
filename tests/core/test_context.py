"""Request context: headers in, headers out, bad headers ignored with a reason."""

import asyncio

from tidegate.core import context


def test_no_headers_is_the_shared_empty_context() -> None:
    assert context.from_headers("", "") is context.EMPTY


def test_lane_and_consumer_are_read() -> None:
    ctx = context.from_headers("a=1, tidegate.lane=gray;p=q", "frontend; admin=127.0.0.1:4567")
    assert (ctx.lane, ctx.origin, ctx.origin_admin, ctx.problem) == ("gray", "frontend", "127.0.0.1:4567", "")


def test_bad_consumer_is_ignored_with_a_reason() -> None:
    ctx = context.from_headers("", "!!!")
    assert ctx.origin == "" and "service name" in ctx.problem
    ctx = context.from_headers("", "frontend; admin=nope")
    assert ctx.origin == "frontend" and ctx.origin_admin == "" and "host:port" in ctx.problem


def test_outbound_baggage_keeps_other_members_and_sets_the_lane() -> None:
    ctx = context.from_headers("a=1,b=2", "").with_lane("gray")
    assert context.outbound_baggage(ctx) == "a=1,b=2,tidegate.lane=gray"
    assert context.outbound_baggage(context.from_headers("a=1", "")) == "a=1"


def test_context_follows_asyncio_tasks_and_is_reset() -> None:
    async def child() -> str:
        return context.current().lane

    async def main() -> str:
        token = context.enter(context.RequestContext(lane="gray"))
        try:
            return await asyncio.create_task(child())
        finally:
            context.leave(token)

    assert asyncio.run(main()) == "gray"
    assert context.current() is context.EMPTY


def test_consumer_value_round_trips() -> None:
    assert context.parse_consumer(context.consumer_value("cart", "127.0.0.1:9")) == ("cart", "127.0.0.1:9", "")


def test_the_lane_key_can_be_renamed_for_a_fleet_that_uses_another() -> None:
    import pytest

    try:
        context.set_lane_key("x-env")
        ctx = context.from_headers("x-env=gray,tidegate.lane=blue", "")
        assert ctx.lane == "gray"
        assert context.baggage_with_lane("a=1", "v2") == "a=1,x-env=v2"
        with pytest.raises(ValueError, match="baggage key"):
            context.set_lane_key("not a key")
        assert context.lane_key() == "x-env"  # a refused key leaves the one in force
    finally:
        context.set_lane_key("tidegate.lane")
