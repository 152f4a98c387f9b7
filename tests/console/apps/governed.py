"""A Starlette `orders` for the console's rule tests: its routes are governed inbound resources (`GET /who`)."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def who(request: Request) -> JSONResponse:
    return JSONResponse({"id": os.environ.get("INSTANCE_ID", "unnamed")})


app = Starlette(routes=[Route("/who", who)])
