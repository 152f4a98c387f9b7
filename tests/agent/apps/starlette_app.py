"""A small Starlette service for the agent's tests."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"item": request.path_params["item_id"]})


app = Starlette(routes=[Route("/items/{item_id}", item)])
