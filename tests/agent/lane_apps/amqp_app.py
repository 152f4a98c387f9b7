"""A RabbitMQ consumer with an HTTP face (aio-pika): queue QUEUE bound to exchange `orders`.

Env: AMQP_URL, QUEUE. Endpoints:
  POST /publish?order=ID   publishes {order} to exchange `orders`, routing key `order`
  GET  /consumed           {"orders": [...], "lanes": [...]}: what the callback took, and the
                           lane of its context while it ran
  GET  /live-tags          tags of live `billing` instances as this agent sees them
Nothing here knows about lanes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.core import context

state: dict[str, Any] = {}
consumed: list[str] = []
lanes_seen: list[str] = []


async def on_message(message: Any) -> None:
    consumed.append(message.body.decode())
    lanes_seen.append(context.current().lane)
    await message.ack()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(os.environ["AMQP_URL"])
    channel = await connection.channel()
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(os.environ["QUEUE"], durable=True)
    await queue.bind(exchange, routing_key="order")
    await queue.consume(on_message)
    state["exchange"] = exchange
    yield
    await connection.close()


async def publish(request: Request) -> JSONResponse:
    await state["exchange"].publish(aio_pika.Message(request.query_params["order"].encode()), routing_key="order")
    return JSONResponse({"ok": True})


async def consumed_orders(request: Request) -> JSONResponse:
    return JSONResponse({"orders": list(consumed), "lanes": list(lanes_seen)})


async def live_tags(request: Request) -> JSONResponse:
    from tidegate.agent.runtime import get_runtime

    runtime = get_runtime()
    tags = sorted({i.tag for i in runtime.directory.routable("billing")}) if runtime else []
    return JSONResponse({"tags": tags})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/publish", publish, methods=["POST"]),
        Route("/consumed", consumed_orders),
        Route("/live-tags", live_tags),
        Route("/health", health),
    ],
    lifespan=lifespan,
)
