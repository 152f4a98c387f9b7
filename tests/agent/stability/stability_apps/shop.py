"""The stability tests' protected service: inbound routes, an outbound dependency, SQL on PostgreSQL.

Run under `tidegate run --service shop`; `SHOP_DATABASE` (a postgresql:// URL)
and `SHOP_TABLE` enable the SQL routes.
"""

from __future__ import annotations

import asyncio
import os

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import tidegate

app = FastAPI()
_client = httpx.AsyncClient(timeout=10.0)
_engine = None


def engine():  # type: ignore[no-untyped-def]
    global _engine
    if _engine is None:
        from sqlalchemy import create_engine

        url = os.environ["SHOP_DATABASE"].replace("postgresql://", "postgresql+psycopg://", 1)
        _engine = create_engine(url, pool_size=4)
    return _engine


@app.get("/items/{item_id}")
def item(item_id: int) -> dict[str, int]:
    return {"item": item_id}


@app.get("/users/{user}/orders")
def orders(user: str) -> dict[str, str]:
    return {"user": user}


@app.get("/slow")
async def slow() -> dict[str, bool]:
    await asyncio.sleep(0.5)
    return {"slow": True}


@app.get("/stock")
async def stock() -> JSONResponse:
    try:
        response = await _client.get("http://inventory/stock")
    except tidegate.BreakerOpenError as error:
        return JSONResponse({"fallback": True, "rule": error.rule}, status_code=503)
    except httpx.HTTPError as error:
        return JSONResponse({"error": str(error)}, status_code=502)
    return JSONResponse(response.json(), status_code=response.status_code)


@app.get("/sql/insert/{n}")
def sql_insert(n: int) -> JSONResponse:
    from sqlalchemy import text

    try:
        with engine().begin() as conn:
            conn.execute(text(f"INSERT INTO {os.environ['SHOP_TABLE']} (n) VALUES (:n)"), {"n": n})
    except tidegate.BlockedError as error:
        return JSONResponse({"sql_blocked": error.resource}, status_code=429)
    return JSONResponse({"inserted": n})


@app.get("/sql/count")
def sql_count() -> JSONResponse:
    from sqlalchemy import text

    with engine().connect() as conn:
        count = conn.execute(text(f"SELECT count(*) FROM {os.environ['SHOP_TABLE']}")).scalar_one()
    return JSONResponse({"count": count})
