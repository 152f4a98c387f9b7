"""`orders`: a plain Starlette service that answers which instance served the call."""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INSTANCE = os.environ.get("DEMO_INSTANCE", "orders")
#: Simulated work per request, so the demo's traffic looks like a real service's.
WORK_S = float(os.environ.get("DEMO_WORK_MS", "2")) / 1000


async def get_order(request: Request) -> JSONResponse:
    await asyncio.sleep(WORK_S)
    return JSONResponse({"instance": INSTANCE, "order": request.path_params["order_id"]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/orders/{order_id}", get_order), Route("/health", health)])
