"""A consumer service for the end-to-end outbound test: calls `orders` by name with one library.

`GET /fanout?library=httpx|httpx-async|requests|aiohttp&n=30` makes n calls
to `http://orders/who` and answers {"ids": {instance id: calls}, "errors":
[messages]}. Nothing here knows about tidegate: under `tidegate run` the
agent routes the name; without it every call fails to resolve `orders`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import httpx
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

URL = "http://orders/who"


def _sync_httpx(n: int) -> list[Any]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        return [_outcome(lambda: client.get(URL).json()["id"]) for _ in range(n)]


def _sync_requests(n: int) -> list[Any]:
    with requests.Session() as session:
        session.trust_env = False
        return [_outcome(lambda: session.get(URL, timeout=5).json()["id"]) for _ in range(n)]


def _outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as error:  # reported to the test, which shows it
        return error


async def _async_httpx(n: int) -> list[Any]:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:

        async def one() -> Any:
            try:
                return (await client.get(URL)).json()["id"]
            except Exception as error:
                return error

        return await asyncio.gather(*(one() for _ in range(n)))


async def _aiohttp(n: int) -> list[Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def one() -> Any:
            try:
                async with session.get(URL) as response:
                    return (await response.json())["id"]
            except Exception as error:
                return error

        return await asyncio.gather(*(one() for _ in range(n)))


async def fanout(request: Request) -> JSONResponse:
    library = request.query_params.get("library", "httpx")
    n = int(request.query_params.get("n", "30"))
    if library == "httpx":
        results = await asyncio.to_thread(_sync_httpx, n)
    elif library == "requests":
        results = await asyncio.to_thread(_sync_requests, n)
    elif library == "httpx-async":
        results = await _async_httpx(n)
    elif library == "aiohttp":
        results = await _aiohttp(n)
    else:
        return JSONResponse({"error": f"unknown library {library!r}"}, status_code=400)
    ids = Counter(r for r in results if isinstance(r, str))
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, str)]
    return JSONResponse({"ids": ids, "errors": errors})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/fanout", fanout), Route("/health", health)])
