"""The stability tests' slow dependency: `/stock` answers after the delay `POST /delay?s=` sets."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_delay_s = 0.0


async def stock(request: Request) -> JSONResponse:
    await asyncio.sleep(_delay_s)
    return JSONResponse({"stock": 7})


async def set_delay(request: Request) -> JSONResponse:
    global _delay_s
    _delay_s = float(request.query_params["s"])
    return JSONResponse({"delay_s": _delay_s})


app = Starlette(routes=[Route("/stock", stock), Route("/delay", set_delay, methods=["POST"])])
