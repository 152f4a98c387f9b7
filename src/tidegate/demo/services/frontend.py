"""`frontend`: calls `http://orders/...` by service name; tidegate's agent does the rest.

Nothing here knows about tidegate: the host `orders` is not a DNS name, it is a
service in the registry, and the agent balances the call over its instances.
"""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INSTANCE = os.environ.get("DEMO_INSTANCE", "frontend")
client = httpx.AsyncClient(timeout=10.0)


async def checkout(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    try:
        response = await client.get(f"http://orders/orders/{order_id}")
        response.raise_for_status()
    except httpx.HTTPError as error:
        return JSONResponse({"frontend": INSTANCE, "error": str(error)}, status_code=502)
    return JSONResponse({"frontend": INSTANCE, "orders": response.json()["instance"]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/checkout/{order_id}", checkout), Route("/health", health)])
