"""The provider `bench/scale_out.py` scales out: slow on its first requests, the way real services are.

Three realistic cold costs, each paid on demand by a fresh process:
- a SQLAlchemy pool to PostgreSQL (SCALE_DB) that opens its connections as
  requests need them (pool_size 8): every request runs one query;
- a price cache filled on demand: a miss costs a query that takes ~100 ms
  (`pg_sleep`, standing in for a join over a big table); `/catalog` loads all
  prices at once (what a warm-up request calls);
- a lazy import of a heavy module on the first request that renders a price.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ITEMS = 200
PORT = int(os.environ.get("SCALE_PORT", "0"))  # which instance answered, for the bench's breakdown
MISS_QUERY_S = 0.1

engine = create_engine(os.environ["SCALE_DB"].replace("postgresql://", "postgresql+psycopg://", 1), pool_size=8, max_overflow=32)
prices: dict[int, float] = {}
formatter: Any = None


def _formatter() -> Any:
    global formatter
    if formatter is None:
        import rich.console  # a heavy import, paid by the first request that renders
        import rich.pretty
        import rich.table  # noqa: F401

        formatter = rich.pretty.pretty_repr
    return formatter


def price(request: Request) -> JSONResponse:
    item = int(request.path_params["item"]) % ITEMS
    with engine.connect() as connection:
        if item not in prices:
            prices[item] = float(connection.execute(text("SELECT :i * 1.5 FROM pg_sleep(:s)"), {"i": item, "s": MISS_QUERY_S}).scalar_one())
        stock = connection.execute(text("SELECT :i % 7"), {"i": item}).scalar_one()
    return JSONResponse({"item": item, "price": _formatter()(prices[item]), "stock": stock, "port": PORT})


def catalog(request: Request) -> JSONResponse:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT i, i * 1.5 FROM generate_series(0, :n - 1) AS i, pg_sleep(:s)"), {"n": ITEMS, "s": MISS_QUERY_S}
        )
        prices.update({int(i): float(p) for i, p in rows})
    _formatter()
    return JSONResponse({"items": len(prices)})


app = Starlette(routes=[Route("/price/{item}", price), Route("/catalog", catalog)])
