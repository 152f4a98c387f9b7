"""`warehouse`: the flash-sale scene's protected service, with a hard capacity.

`GET /reserve/{item}` holds one of `WAREHOUSE_SLOTS` slots (default 1) for
`WAREHOUSE_WORK_S` seconds (default 0.05): at most slots / work = 20
reservations a second, like a database row lock would allow. Requests beyond
that queue for a slot. Nothing here knows about tidegate.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

WORK_S = float(os.environ.get("WAREHOUSE_WORK_S", "0.05"))
_slots = asyncio.Semaphore(int(os.environ.get("WAREHOUSE_SLOTS", "1")))


async def reserve(request: Request) -> JSONResponse:
    async with _slots:
        await asyncio.sleep(WORK_S)
    return JSONResponse({"item": request.path_params["item"], "reserved": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/reserve/{item}", reserve), Route("/health", health)])
