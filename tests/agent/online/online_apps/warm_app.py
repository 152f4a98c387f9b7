"""An app whose startup and prewarm the online tests watch.

- Lifespan startup creates a SQLAlchemy engine on ONLINE_DB (when set) with a
  pool of ONLINE_POOL_SIZE, whose every new connection's time is recorded.
- Or an async engine (asyncpg) on ONLINE_ASYNC_DB, pool_size 4.
- A redis-py client on ONLINE_REDIS (when set).
- `GET /catalog` counts warm-up requests (user-agent `tidegate-warmup`) and the
  time of the last one; it waits for the file ONLINE_GATE (when set) to exist,
  so a test can hold the prewarm open while it looks.
- `GET /stats` tells all that, and the pool's checked-in count, redis-py's idle connections.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

state: dict[str, Any] = {"warmups": 0, "last_warmup_at": 0.0, "connects": [], "startup_done_at": 0.0}
engines: list[Any] = []
clients: list[Any] = []


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    url = os.environ.get("ONLINE_DB")
    if url:
        from sqlalchemy import create_engine, event

        engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1),
            pool_size=int(os.environ.get("ONLINE_POOL_SIZE", "5")),
            connect_args={"application_name": os.environ.get("ONLINE_APP_NAME", "warm_app")},
        )
        event.listen(engine, "connect", lambda *args: state["connects"].append(time.time()))
        engines.append(engine)
    async_url = os.environ.get("ONLINE_ASYNC_DB")
    if async_url:
        from sqlalchemy.ext.asyncio import create_async_engine

        async_engine = create_async_engine(async_url.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=4)
        engines.append(async_engine.sync_engine)
    redis_url = os.environ.get("ONLINE_REDIS")
    if redis_url:
        import redis

        clients.append(redis.Redis.from_url(redis_url))
    await asyncio.sleep(float(os.environ.get("ONLINE_STARTUP_S", "0")))
    state["startup_done_at"] = time.time()
    yield


async def catalog(request: Request) -> JSONResponse:
    if request.headers.get("user-agent") == "tidegate-warmup":
        state["warmups"] += 1
        state["last_warmup_at"] = time.time()
    gate = os.environ.get("ONLINE_GATE")
    while gate and not Path(gate).exists():
        await asyncio.sleep(0.05)
    return JSONResponse({"items": ["tea", "cake"]})


async def stats(request: Request) -> JSONResponse:
    pool = engines[0].pool if engines else None
    redis_pool = clients[0].connection_pool if clients else None
    return JSONResponse(
        {
            **state,
            "pool_checkedin": pool.checkedin() if pool else None,
            "pool_size": pool.size() if pool else None,
            "redis_idle": len(redis_pool._available_connections) if redis_pool else None,
        }
    )


app = Starlette(routes=[Route("/catalog", catalog), Route("/stats", stats)], lifespan=lifespan)
