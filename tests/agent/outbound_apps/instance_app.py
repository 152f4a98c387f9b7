"""One instance of a service for the outbound tests: answers who it is and what it was asked.

`GET /...` answers JSON {"id", "path", "query", "host", "baggage", "consumer"}; `/fail` answers 500;
`/redirect` answers 302 to `/after-redirect` (relative, so it stays on this
instance). The id comes from INSTANCE_ID.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

INSTANCE_ID = os.environ.get("INSTANCE_ID", "unnamed")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    path = scope["path"]
    status, extra = 200, []
    if path == "/fail":
        status = 500
    elif path == "/redirect":
        status, extra = 302, [(b"location", b"/after-redirect")]
    body = json.dumps(
        {
            "id": INSTANCE_ID,
            "path": path,
            "query": scope["query_string"].decode(),
            "host": headers.get(b"host", b"").decode(),
            "baggage": headers.get(b"baggage", b"").decode(),
            "consumer": headers.get(b"x-tidegate-consumer", b"").decode(),
        }
    ).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *extra]})
    await send({"type": "http.response.body", "body": body})
