"""A WSGI app for gunicorn: each warm-up request appends its time to the file ONLINE_LOG (workers share it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("HTTP_USER_AGENT") == "tidegate-warmup":
        with open(os.environ["ONLINE_LOG"], "a") as log:
            log.write(f"{time.time()}\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
