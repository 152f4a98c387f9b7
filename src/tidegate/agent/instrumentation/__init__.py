"""One instrumentor per patched library; each removable, each declaring what it supports.

A module here exposes `INSTRUMENTOR`, an object with:
  - `library`: the import name it patches (e.g. "httpx");
  - `supported`: a requirement string (e.g. "httpx >= 0.23");
  - `instrument(runtime)` and `uninstrument()`.
`install_all` applies every one whose library is importable and supported,
logging (never raising) when one fails, so one broken patch never breaks the
app or the others.

Instrumentors find the capabilities they serve on the runtime by class
(`runtime.capability(Stability)`); they may import every other part of the
agent; in src/ only `tidegate.agent.boot` imports them (and lossless online's
prewarm, which runs the `*_prewarm` steps found by module name).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate.agent")

#: Modules under this package, in the order they are applied.
MODULES: tuple[str, ...] = (
    "httpx",
    "requests",
    "aiohttp",
    "threads",
    "redis_streams",
    "grpc",
    "aio_pika",
    # lossless online: track pools and sessions to prewarm (patched when their library is imported)
    "sqlalchemy_prewarm",
    "redis_prewarm",
    "http_prewarm",
    # server side: patched when their library is imported (see inbound.py)
    "uvicorn",
    "gunicorn",
    "flask",
    "django",
    # stability: govern at the matched route (Starlette, FastAPI) and per SQL statement
    "starlette",
    "sqlalchemy",
)


def install_all(runtime: AgentRuntime, modules: tuple[str, ...] = MODULES) -> list[Any]:
    """Apply every available instrumentor; return those applied."""
    applied = []
    for name in modules:
        try:
            module = importlib.import_module(f"tidegate.agent.instrumentation.{name}")
            instrumentor = module.INSTRUMENTOR
            if not instrumentor.available():
                continue
            instrumentor.instrument(runtime)
            applied.append(instrumentor)
        except Exception:  # one failing patch must never break the app
            log.exception("tidegate: instrumentation %s failed and is skipped", name)
    return applied
