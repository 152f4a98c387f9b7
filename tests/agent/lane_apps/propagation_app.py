"""Hands outbound calls to other tasks and threads, to show the lane follows them.

`GET /probe?via=gather|executor|pool|thread|background` calls this app's own
`/echo` (which answers the `baggage` header it got) the way `via` says and
answers {"seen": [baggage, ...]}; for `background` the call runs in a
Starlette BackgroundTask after the response, and `GET /background` answers
what it saw. Nothing here knows about tidegate.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ECHO = f"http://127.0.0.1:{os.environ['APP_PORT']}/echo"
POOL = ThreadPoolExecutor(max_workers=2)  # shared by every request, so its threads outlive the one that started them
background_seen: list[str] = []


def sync_call() -> str:
    with httpx.Client(timeout=10, trust_env=False) as client:
        return str(client.get(ECHO).json()["baggage"])


async def async_call(client: httpx.AsyncClient) -> str:
    return str((await client.get(ECHO)).json()["baggage"])


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"baggage": request.headers.get("baggage", "")})


async def probe(request: Request) -> JSONResponse:
    via = request.query_params["via"]
    seen: list[Any]
    if via == "gather":
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            seen = list(await asyncio.gather(*(async_call(client) for _ in range(4))))
    elif via == "executor":
        seen = [await asyncio.get_running_loop().run_in_executor(None, sync_call)]
    elif via == "pool":
        seen = list(await asyncio.gather(*(asyncio.wrap_future(POOL.submit(sync_call)) for _ in range(3))))
    elif via == "thread":
        seen = []
        thread = threading.Thread(target=lambda: seen.append(sync_call()))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)  # the loop must keep serving /echo
    elif via == "background":
        background_seen.clear()
        return JSONResponse({"seen": []}, background=BackgroundTask(lambda: background_seen.append(sync_call())))
    else:
        return JSONResponse({"error": f"unknown via {via!r}"}, status_code=400)
    return JSONResponse({"seen": seen})


async def background(request: Request) -> JSONResponse:
    return JSONResponse({"seen": list(background_seen)})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/echo", echo),
        Route("/probe", probe),
        Route("/background", background),
        Route("/health", health),
    ]
)
