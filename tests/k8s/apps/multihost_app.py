"""The pods' apps, plain ASGI with no tidegate in them: `orders` answers its pod's APP_ID, and
`checkout` calls `http://orders/who` by name (one keep-alive httpx client) and answers what it got."""

import json
import os
import time

import httpx

APP_ID = os.environ.get("APP_ID", "?")
LAST_FILE = os.environ.get("LAST_FILE")  # when set, each request notes its arrival time here
client = None


async def _answer(send, status, body):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def orders(scope, receive, send):
    if scope["type"] == "http":
        if LAST_FILE:
            with open(LAST_FILE, "w") as f:
                f.write(repr(time.time()))
        await _answer(send, 200, {"id": APP_ID})


async def checkout(scope, receive, send):
    global client
    if scope["type"] != "http":
        return
    if client is None:
        client = httpx.AsyncClient(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=200))
    try:
        response = await client.get("http://orders/who")
        await _answer(send, 200 if response.status_code == 200 else 502, {"id": response.json().get("id"), "via": APP_ID})
    except Exception as error:
        await _answer(send, 502, {"error": f"{type(error).__name__}: {error}"})
