"""`python programmatic_app.py PORT`: a service that starts uvicorn itself."""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hi(request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


app = Starlette(routes=[Route("/hi", hi)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
