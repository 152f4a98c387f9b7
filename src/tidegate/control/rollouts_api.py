"""The rollout endpoints (`/v1/rollouts`): start, read, and the operator's actions, over a RolloutRunner.

Writes need the admin token, reads the read token (as the rules'). The runner's
timer is `tick_forever`, started with the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidegate.control.plane import RequestError
from tidegate.control.rollouts import TICK_S, RolloutRunner

log = logging.getLogger("tidegate.control")

Handler = Callable[[Request], Any]
Guard = Callable[[Handler], Handler]


def rollout_routes(runner: RolloutRunner, read: Guard, admin: Guard, body: Callable[[Request], Any]) -> list[Route]:
    async def start(request: Request) -> Response:
        return JSONResponse(runner.start(await body(request)), status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse(runner.all())

    async def one(request: Request) -> Response:
        return JSONResponse(runner.view(request.path_params["service"]))

    async def act(request: Request) -> Response:
        data = await body(request) if await request.body() else {}
        reason = data.get("reason", "") if isinstance(data, dict) else ""
        if not isinstance(reason, str) or len(reason) > 500:
            raise RequestError(422, "must be text of at most 500 characters", field="reason")
        return JSONResponse(runner.act(request.path_params["service"], request.path_params["action"], reason))

    return [
        Route("/v1/rollouts", read(listing), methods=["GET"]),
        Route("/v1/rollouts", admin(start), methods=["POST"]),
        Route("/v1/rollouts/{service}", read(one), methods=["GET"]),
        Route("/v1/rollouts/{service}/{action}", admin(act), methods=["POST"]),
    ]


async def tick_forever(runner: RolloutRunner, interval: float = TICK_S) -> None:
    """Judge due windows every `interval` seconds; a failing tick is logged, never the end of the timer."""
    while True:
        await asyncio.sleep(interval)
        try:
            runner.tick()
        except Exception:
            log.exception("control plane: a rollout tick failed")
