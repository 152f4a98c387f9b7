"""`billing`: consumes the `orders` stream in group `billing`, and can publish to it.

Env: REDIS_URL, STREAM (default "orders"), CLIENT ("async": redis.asyncio in
the event loop; "sync": redis.Redis in a thread). Endpoints:
  POST /publish?order=ID   XADD {order: ID} (the agent adds the request's lane)
  GET  /consumed           {"orders": [ID, ...]} in the order consumed
  GET  /live-tags          tags of live `billing` instances as this agent sees them
The consumer code is plain redis-py; under `tidegate run --tag L` it takes
lane-L messages only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

URL = os.environ["REDIS_URL"]
STREAM = os.environ.get("STREAM", "orders")
GROUP = "billing"
CONSUMER = f"billing-{os.getpid()}"
consumed: list[str] = []
stopping = threading.Event()


def _record(reply: Any) -> list[tuple[str, bytes]]:
    acked = []
    for stream, messages in reply.items() if isinstance(reply, dict) else reply or ():
        for message_id, fields in messages:
            consumed.append(fields[b"order"].decode())
            acked.append((stream, message_id))
    return acked


async def consume_async() -> None:
    client = redis.asyncio.Redis.from_url(URL)
    with contextlib.suppress(redis.ResponseError):
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    while not stopping.is_set():
        reply = await client.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=100, block=100)
        for stream, message_id in _record(reply):
            await client.xack(stream, GROUP, message_id)
    await client.aclose()


def consume_sync() -> None:
    client = redis.Redis.from_url(URL)
    with contextlib.suppress(redis.ResponseError):
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    while not stopping.is_set():
        reply = client.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=100, block=100)
        for stream, message_id in _record(reply):
            client.xack(stream, GROUP, message_id)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    if os.environ.get("CLIENT", "async") == "sync":
        worker = threading.Thread(target=consume_sync, daemon=True)
        worker.start()
        yield
        stopping.set()
        worker.join(timeout=5)
    else:
        task = asyncio.create_task(consume_async())
        yield
        stopping.set()
        await asyncio.wait_for(task, timeout=5)


producer = redis.asyncio.Redis.from_url(URL)


async def publish(request: Request) -> JSONResponse:
    message_id = await producer.xadd(STREAM, {"order": request.query_params["order"]})
    return JSONResponse({"id": message_id.decode() if isinstance(message_id, bytes) else message_id})


async def consumed_orders(request: Request) -> JSONResponse:
    return JSONResponse({"orders": list(consumed)})


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
