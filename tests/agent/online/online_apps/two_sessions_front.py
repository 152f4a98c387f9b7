"""A consumer with two requests.Sessions made at import (its calls and its audit trail), both to catalog."""

from __future__ import annotations

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

session = requests.Session()
audit = requests.Session()


def call(request: Request) -> JSONResponse:
    return JSONResponse(session.get("http://catalog/stats", timeout=5).json())


app = Starlette(routes=[Route("/call", call)])
