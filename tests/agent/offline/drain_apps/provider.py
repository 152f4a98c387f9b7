"""An `orders` instance for the drain tests: `/who` answers its id, `/slow?s=2` answers after s seconds.

`app` is ASGI (uvicorn), `wsgi_app` is WSGI (gunicorn); the id comes from INSTANCE_ID.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

INSTANCE_ID = os.environ.get("INSTANCE_ID", "unnamed")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _seconds(query: str) -> float:
    return float(parse_qs(query).get("s", ["0"])[0])


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(_seconds(scope["query_string"].decode()))
    body = json.dumps({"id": INSTANCE_ID, "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/slow":
        time.sleep(_seconds(environ.get("QUERY_STRING", "")))
    body = json.dumps({"id": INSTANCE_ID, "path": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
