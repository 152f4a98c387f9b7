"""`storefront`: the flash-sale scene's caller; `GET /buy/{item}` reserves at `http://warehouse`.

It waits at most `STOREFRONT_TIMEOUT_S` (default 1 s) for the warehouse, and
says in its answer what the warehouse did (`served`, `shed` when it answered
429, `timeout`, `error`) and how long that took. A shed call is answered 429
at once ("sold out for now, retry"). Nothing here knows about tidegate.
"""

from __future__ import annotations

import os
import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TIMEOUT_S = float(os.environ.get("STOREFRONT_TIMEOUT_S", "1.0"))
client = httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=1000))


async def buy(request: Request) -> JSONResponse:
    item = request.path_params["item"]
    started = time.perf_counter()
    try:
        response = await client.get(f"http://warehouse/reserve/{item}")
    except httpx.TimeoutException:
        return _answer(504, "timeout", started)
    except httpx.HTTPError:
        return _answer(502, "error", started)
    if response.status_code == 429:
        return _answer(429, "shed", started)
    if response.status_code != 200:
        return _answer(502, "error", started)
    return _answer(200, "served", started)


def _answer(status: int, warehouse: str, started: float) -> JSONResponse:
    return JSONResponse({"warehouse": warehouse, "warehouse_ms": (time.perf_counter() - started) * 1000}, status_code=status)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/buy/{item}", buy), Route("/health", health)])
