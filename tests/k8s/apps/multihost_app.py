"""The pods' apps, plain ASGI with no tidegate in them: `orders` answers its pod's APP_ID, and
`checkout` calls `http://orders/who` by name (one keep-alive httpx client) and answers what it got;
`checkout_ribbon` (a bench's anchor) lists orders from the control plane every 30 s, as Ribbon does.
`orders` answers `/versions` with the versions and files of the libraries it imports itself, and
the modules of this process loaded from AGENT_COPY (way (b)'s copied agent) but tidegate's own
(and its bootstrap `sitecustomize`)."""

import importlib.metadata
import json
import os
import sys
import time

import httpx

APP_ID = os.environ.get("APP_ID", "?")
LAST_FILE = os.environ.get("LAST_FILE")  # when set, each request notes its arrival time here
client = None


async def _answer(send, status, body):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def versions():
    import platformdirs
    import prometheus_client
    import wrapt
    import yaml

    mine = {"httpx": httpx, "PyYAML": yaml, "prometheus_client": prometheus_client, "wrapt": wrapt, "platformdirs": platformdirs}
    copy = os.environ.get("AGENT_COPY", "")
    foreign = [
        name
        for name, module in list(sys.modules.items())
        if copy
        and (getattr(module, "__file__", None) or "").startswith(copy)
        and not name.startswith("tidegate")
        and name != "sitecustomize"
    ]
    control = sys.modules.get("tidegate.client.control")
    return {
        "mine": {name: [importlib.metadata.version(name), module.__file__] for name, module in mine.items()},
        "from_the_copy": foreign,
        "agent_httpx": [control.httpx.__version__, control.httpx.__file__] if control else None,
    }


def _address(error):
    """Where a failed call went (the instance the agent chose): a bench's error list shows it."""
    try:
        return str(error.request.url)
    except Exception:
        return ""


async def orders(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/versions":
        await _answer(send, 200, versions())
    elif scope["type"] == "http":
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
        await _answer(send, 502, {"error": f"{type(error).__name__}: {error}", "to": _address(error)})


RIBBON_REFRESH_S = 30.0  # Ribbon's default list refresh
servers: list = []
refreshed = 0.0
turn = 0


async def checkout_ribbon(scope, receive, send):
    """`checkout` for consumers without a push: the instance list from the control plane every
    RIBBON_REFRESH_S (the pod's agent token), round robin over it, calls to the address itself."""
    global client, servers, refreshed, turn
    if scope["type"] != "http":
        return
    if client is None:
        client = httpx.AsyncClient(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=200))
    try:
        if not servers or time.monotonic() - refreshed > RIBBON_REFRESH_S:
            with open(os.environ["TIDEGATE_TOKEN_FILE"]) as f:
                token = f.read().strip()
            listed = await client.get(
                os.environ["TIDEGATE_CONTROL"] + "/v1/services/orders/instances", headers={"Authorization": f"Bearer {token}"}
            )
            servers = [f"http://{i['host']}:{i['port']}" for i in listed.json() if i["state"] in ("WARMING", "SERVING")]
            refreshed = time.monotonic()
        turn += 1
        response = await client.get(servers[turn % len(servers)] + "/who")
        await _answer(send, 200 if response.status_code == 200 else 502, {"id": response.json().get("id"), "via": APP_ID})
    except Exception as error:
        await _answer(send, 502, {"error": f"{type(error).__name__}: {error}", "to": _address(error)})
