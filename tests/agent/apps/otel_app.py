"""A Starlette service wrapped in OpenTelemetry's ASGI middleware: its spans reach
the console only when `opentelemetry-instrument` configured the SDK."""

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


app = OpenTelemetryMiddleware(Starlette(routes=[Route("/ping", ping)]))
