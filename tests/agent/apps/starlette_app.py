"""A small Starlette service for the agent's tests."""

import asyncio
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"item": request.path_params["item_id"]})


async def hold(request: Request) -> JSONResponse:
    """Answers once the file named by ?until= exists: a request kept in flight as long as a test wants."""
    until = Path(request.query_params["until"])
    while not until.exists():
        await asyncio.sleep(0.02)
    return JSONResponse({"held": True})


app = Starlette(routes=[Route("/items/{item_id}", item), Route("/hold", hold)])
