"""A consumer service for the drain tests and the rolling-restart bench: calls `orders` by name.

`GET /call?path=/who` calls `http://orders<path>` with one shared httpx
AsyncClient (keep-alive, as a real service would) and answers
{"status": <orders' status>, "id": <the instance that answered>} or, when the
call failed, 502 {"error": "<what failed>"}.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_client: httpx.AsyncClient | None = None


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    global _client
    if scope["type"] != "http":
        return
    if _client is None:
        _client = httpx.AsyncClient(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=200))
    path = parse_qs(scope["query_string"].decode()).get("path", ["/who"])[0]
    try:
        response = await _client.get(f"http://orders{path}")
        status, body = 200, {"status": response.status_code, "id": response.json().get("id")}
        if response.status_code != 200:
            status = 502
    except Exception as error:  # reported to the caller, who counts it as a failed request
        status, body = 502, {"error": f"{type(error).__name__}: {error}"}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
