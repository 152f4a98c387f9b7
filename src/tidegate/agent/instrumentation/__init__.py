"""One instrumentor per patched library; each removable, each declaring what it supports.

A module here exposes `INSTRUMENTOR`, an `Instrumentor` (`base.py`) with:
  - `library`: the import name it patches (e.g. "httpx");
  - `supported`: requirement strings (e.g. "httpx >= 0.23, < 1"), bounded above
    wherever a private API is patched;
  - `instrument(runtime)` and `uninstrument()`, idempotent; the patch is applied
    when the library is imported (at once when it already is).
`install_all` applies every one whose library is installed in a supported
version, logging (never raising) why one is not: not installed (debug), an
unsupported version, or a patch that failed. One broken patch never breaks the
app or the others.

Instrumentors find the capabilities they serve on the runtime by class
(`runtime.capability(Stability)`), once, when they are instrumented, and
register their library's prewarm step with lossless online; they may import
every other part of the agent; in src/ only `tidegate.agent.boot` imports them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from tidegate.agent.instrumentation.base import Instrumentor

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate.agent")

#: Modules under this package, in the order they are applied.
MODULES: tuple[str, ...] = (
    # outbound: calls to service names, through the process's outbound pipeline
    "httpx",
    "requests",
    "aiohttp",
    # the request context follows work handed to threads, gRPC calls and messages
    "threads",
    "redis",
    "grpc",
    "aio_pika",
    # server side
    "uvicorn",
    "gunicorn",
    "flask",
    "django",
    # stability: govern at the matched route (Starlette, FastAPI) and per SQL statement
    "starlette",
    "sqlalchemy",
)


def install_all(runtime: AgentRuntime, modules: tuple[str, ...] = MODULES) -> list[Instrumentor]:
    """Apply every available instrumentor; return those applied."""
    applied = []
    for name in modules:
        try:
            instrumentor: Instrumentor = importlib.import_module(f"tidegate.agent.instrumentation.{name}").INSTRUMENTOR
        except Exception:  # a broken module must never break the app
            log.exception("tidegate: instrumentation %s could not be loaded; not patched", name)
            continue
        if not instrumentor.installed():
            log.debug("tidegate: %s is not installed; not patched", instrumentor.library)
            continue
        unmet = instrumentor.unsupported()
        if unmet is not None:
            log.info("tidegate: %s is installed in an unsupported version (needs %s); not patched", instrumentor.library, unmet)
            continue
        try:
            instrumentor.instrument(runtime)
        except Exception:  # one failing patch must never break the app
            log.exception("tidegate: patch failed: %s runs unpatched", instrumentor.library)
            continue
        if instrumentor.failed:
            continue
        applied.append(instrumentor)
    return applied
