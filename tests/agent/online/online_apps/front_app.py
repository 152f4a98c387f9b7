"""A consumer with a requests.Session made at import: `GET /call` calls `http://catalog/stats` through it."""

from __future__ import annotations

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

session = requests.Session()


def call(request: Request) -> JSONResponse:
    return JSONResponse(session.get("http://catalog/stats", timeout=5).json())


app = Starlette(routes=[Route("/call", call)])
