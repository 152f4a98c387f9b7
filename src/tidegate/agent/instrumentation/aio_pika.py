"""aio-pika (RabbitMQ): messages carry their lane; each lane's consumers take its messages.

Producers: `Exchange.publish` from a request in lane L adds the headers
`tidegate.lane: L` and `baggage` (a lane header the app set is left alone).

Consumers, by this instance's tag (`TIDEGATE_TAG`):
  - tagged L: `declare_queue("Q")` declares and returns `Q@L` instead, and
    binding it to exchanges is skipped: `Q@L` only receives what base
    consumers hand over, so it never sees a message twice;
  - untagged (base): a lane-L message arriving on `Q` while the registry
    shows a live instance of this service tagged L is republished to `Q@L`
    (declared with `Q`'s durability) and acknowledged on `Q`; while none is
    live, the base's own callback takes it. Base messages pass untouched.
Every consumer callback runs in the context of its message's lane, so what
it calls carries the lane on.

Limits: handing over is publish-then-ack (a crash in between may deliver a
message twice); messages already in `Q@L` when its last consumer goes stay
there until one returns; `Queue.iterator()` hands over like `consume` (it
consumes through it) but its loop runs in no particular lane;
`Queue.get()` is not governed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import Instrumentor, lane_baggage
from tidegate.core import context
from tidegate.core.baggage import is_valid_lane

if TYPE_CHECKING:
    from types import ModuleType

LANE_HEADER = "tidegate.lane"


def lane_of(headers: Any) -> str:
    """The lane a message's headers carry ("" for base or an invalid value)."""
    value = headers.get(LANE_HEADER) if headers else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) and is_valid_lane(value) else ""


def lane_queue(name: str, tag: str) -> str:
    """The queue of lane `tag` derived from base queue `name`."""
    return f"{name}@{tag}"


class AioPikaInstrumentor(Instrumentor):
    library = "aio_pika"
    supported = ("aio-pika >= 9.0",)

    def tag(self) -> str:
        return self.runtime.config.tag if self.runtime is not None else ""

    def live_tags(self) -> set[str]:
        runtime = self.runtime
        if runtime is None:
            return set()
        return {i.tag for i in runtime.directory.routable(runtime.config.service) if i.tag}

    def _patch(self, module: ModuleType) -> None:
        from aio_pika.channel import Channel
        from aio_pika.exchange import Exchange
        from aio_pika.message import Message
        from aio_pika.queue import Queue

        instrumentor = self

        def publish(wrapped: Callable[..., Any], exchange: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            current = context.current()
            message = args[0] if args else kwargs.get("message")
            if current.lane and message is not None and LANE_HEADER not in (message.headers or {}):
                headers = dict(message.headers or {})
                headers[LANE_HEADER] = current.lane
                baggage = headers.get("baggage")
                headers["baggage"] = lane_baggage(baggage if isinstance(baggage, str) else current.baggage, current.lane)
                message.headers = headers
            return wrapped(*args, **kwargs)

        def declare_queue(wrapped: Callable[..., Any], channel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            tag = instrumentor.tag()
            name = args[0] if args else kwargs.get("name")
            if tag and name and not name.endswith(f"@{tag}"):
                kwargs = {**kwargs, "name": lane_queue(name, tag)}
                args = args[1:]
            return wrapped(*args, **kwargs)

        async def bind(wrapped: Callable[..., Any], queue: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            tag = instrumentor.tag()
            if tag and queue.name.endswith(f"@{tag}"):
                return None  # a lane queue only receives what base consumers hand over
            return await wrapped(*args, **kwargs)

        def consume(wrapped: Callable[..., Any], queue: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            callback = args[0] if args else kwargs["callback"]
            governed = instrumentor._governed(queue, callback, Message)
            if args:
                args = (governed, *args[1:])
            else:
                kwargs = {**kwargs, "callback": governed}
            return wrapped(*args, **kwargs)

        self.wrap(Exchange, "publish", publish)
        self.wrap(Channel, "declare_queue", declare_queue)
        self.wrap(Queue, "bind", bind)
        self.wrap(Queue, "consume", consume)

    def _governed(self, queue: Any, callback: Callable[[Any], Awaitable[Any]], message_type: type) -> Callable[[Any], Awaitable[Any]]:
        instrumentor = self
        declared: set[str] = set()

        @functools.wraps(callback)
        async def governed(message: Any) -> Any:
            lane = lane_of(message.headers)
            if lane and not instrumentor.tag() and lane in instrumentor.live_tags():
                target = lane_queue(queue.name, lane)
                if target not in declared:
                    await queue.channel.declare_queue(target, durable=queue.durable)
                    declared.add(target)
                copy = message_type(
                    message.body,
                    headers=dict(message.headers or {}),
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    delivery_mode=message.delivery_mode,
                    priority=message.priority,
                    correlation_id=message.correlation_id,
                    reply_to=message.reply_to,
                    message_id=message.message_id,
                    type=message.type,
                    app_id=message.app_id,
                )
                await queue.channel.default_exchange.publish(copy, routing_key=target)
                await message.ack()
                return None
            if not lane:
                return await callback(message)
            baggage = message.headers.get("baggage")
            carried = context.from_headers(baggage if isinstance(baggage, str) else "", "").with_lane(lane)
            token = context.enter(carried)
            try:
                return await callback(message)
            finally:
                context.leave(token)

        return governed


INSTRUMENTOR = AioPikaInstrumentor()
