"""`catalog`: a service that is slow on its first requests, as real ones are after a start.

Its price cache fills on demand: a miss costs a simulated 40 ms query (a real
service waits on its database), and `/catalog` loads every price in one go (what a
warm-up request calls). Its first call also pays a lazy import.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INSTANCE = os.environ.get("DEMO_INSTANCE", "catalog")
ITEMS = 200
MISS_S = 0.04
WORK_S = 0.002
prices: dict[int, float] = {}
render: Any = None


def _render() -> Any:
    global render
    if render is None:
        import rich.pretty  # a heavy import, paid by the first call

        render = rich.pretty.pretty_repr
    return render


async def price(request: Request) -> JSONResponse:
    item = int(request.path_params["item"]) % ITEMS
    if item not in prices:
        await asyncio.sleep(MISS_S)
        prices[item] = item * 1.5
    await asyncio.sleep(WORK_S)
    return JSONResponse({"instance": INSTANCE, "price": _render()(prices[item])})


async def catalog(request: Request) -> JSONResponse:
    await asyncio.sleep(MISS_S)
    prices.update({item: item * 1.5 for item in range(ITEMS)})
    _render()
    return JSONResponse({"items": len(prices)})


app = Starlette(routes=[Route("/price/{item}", price), Route("/catalog", catalog)])
