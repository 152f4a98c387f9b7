"""One hop of the lanes scene's chain `frontend -> cart -> pricing -> stock`.

Env: SHOP_NEXT (the service this hop calls, "" for the last), and for cart
REDIS_URL + STREAM to publish each order to the `orders` stream. `GET
/order/{id}` calls `http://<SHOP_NEXT>/order/{id}` and answers {"served":
["frontend:base", "cart:gray", ...]}: which version of each hop served it
(the version is the instance's tag, `TIDEGATE_TAG`). A downstream failure
answers 502 with the error's text. Nothing here routes or reads lanes: the
agent colors, routes, and carries the lane into the call and the message.
"""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SERVICE = os.environ.get("TIDEGATE_SERVICE", "shop")
VERSION = os.environ.get("TIDEGATE_TAG") or "base"
NEXT = os.environ.get("SHOP_NEXT", "")
STREAM = os.environ.get("STREAM", "orders")
client = httpx.AsyncClient(timeout=10.0, trust_env=False, limits=httpx.Limits(max_connections=64))
publisher = None
if os.environ.get("REDIS_URL"):
    import redis.asyncio

    publisher = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])


async def order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    served = [f"{SERVICE}:{VERSION}"]
    if publisher is not None:
        await publisher.xadd(STREAM, {"order": order_id})
    if NEXT:
        try:
            response = await client.get(f"http://{NEXT}/order/{order_id}")
        except httpx.HTTPError as error:
            return JSONResponse({"served": served, "error": f"{type(error).__name__}: {error}"}, status_code=502)
        body = response.json()
        if response.status_code != 200:
            return JSONResponse({"served": served + body.get("served", []), "error": body.get("error", "")}, status_code=502)
        served += body["served"]
    return JSONResponse({"served": served})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/order/{order_id}", order), Route("/health", health)])
