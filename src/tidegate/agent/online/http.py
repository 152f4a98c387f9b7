"""Lossless online's HTTP prewarm: one whole exchange per (session, instance), never a bare connection.

A connection opened ahead and left with nothing sent pins a sync worker of the
callee that accepted it (it waits for a request): so the step sends a real
request (`TIDEGATE_PREWARM_HTTP_REQUEST`, default `HEAD /`) and reads its
answer whole, and only then is the connection back in the session's pool. The
sessions are duck-typed (`session.request(method, url, timeout=, headers=)`,
requests' API), so this module imports no client library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tidegate.core.prewarm import WarmupRequest

PREWARM_TIMEOUT_S = 5.0
USER_AGENT = "tidegate-prewarm"


def warm_connections(sessions: Iterable[Any], urls: Iterable[str], request: WarmupRequest) -> tuple[int, int]:
    """One request per (session, url), its answer read whole: (answered, failed)."""
    answered = failed = 0
    targets = list(urls)
    for session in sessions:
        for url in targets:
            try:
                response = session.request(
                    request.method, url.rstrip("/") + request.path, timeout=PREWARM_TIMEOUT_S, headers={"User-Agent": USER_AGENT}
                )
                response.content  # noqa: B018  # read whole: the connection goes back to the pool only then
                response.close()
                answered += 1
            except Exception:  # an instance that does not answer is not worth a failed startup
                failed += 1
    return answered, failed


def warm_sessions(services: Sequence[str], sessions: Sequence[Any], urls: Iterable[str], request: WarmupRequest, kind: str) -> str:
    """The prewarm step of one client library: warm `sessions` (of `kind`) for `services`; what it did."""
    if not services:
        return "no service called before or declared"
    if not sessions:
        return f"services {', '.join(services)}: no {kind} the app made to fill"
    answered, failed = warm_connections(sessions, urls, request)
    done = f"services {', '.join(services)}: {answered} connection(s) warmed with {request.method} {request.path}"
    return done + (f", {failed} failed" if failed else "")
