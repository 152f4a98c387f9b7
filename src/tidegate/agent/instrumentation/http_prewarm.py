"""HTTP client prewarm: open connections to the services this service calls, before it registers.

Which services: those it called in its previous life (lossless online's
`CalledServices`, `tidegate.agent.online.called`) plus those declared in
`TIDEGATE_PREWARM_SERVICES=orders,stock`. For each routable
instance of each, every `requests.Session` the app created gets one open
connection in its urllib3 pool (a TCP connect, no request sent), so the
first calls skip the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor
from tidegate.agent.online import LosslessOnline

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime
    from tidegate.core.prewarm import PrewarmPlan

log = logging.getLogger("tidegate")

SESSIONS: weakref.WeakSet[Any] = weakref.WeakSet()


class RequestsSessionTracker(InboundInstrumentor):
    library = "requests"
    supported = "requests >= 2.25"

    def _patch(self, module: ModuleType) -> None:
        from requests.sessions import Session

        self.wrap(Session, "__init__", _track)


def _track(wrapped: Any, session: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    SESSIONS.add(session)
    return result


def open_connections(sessions: Iterable[Any], urls: Iterable[str]) -> int:
    """One open connection per (session, url) in the session's urllib3 pool."""
    opened = 0
    targets = list(urls)
    for session in sessions:
        for url in targets:
            adapter = session.get_adapter(url)
            pool = adapter.poolmanager.connection_from_url(url)
            connection = pool._get_conn()  # urllib3 has no public "connect ahead"; this is its own pool's path
            try:
                connection.connect()
                opened += 1
            finally:
                pool._put_conn(connection)
    return opened


def prewarm(runtime: AgentRuntime, plan: PrewarmPlan, loop: asyncio.AbstractEventLoop | None) -> str:
    online = runtime.capability(LosslessOnline)
    called = online.called if online is not None else None
    services = sorted(set(plan.services) | (called.names if called is not None else set()))
    if not services:
        return "no service called before or declared"
    urls = [f"http://{i.host}:{i.port}/" for name in services for i in runtime.directory.routable(name)]
    sessions = list(SESSIONS)
    if not sessions:
        return f"services {', '.join(services)}: no requests.Session to fill"
    return f"services {', '.join(services)}: {open_connections(sessions, urls)} connection(s)"


INSTRUMENTOR = RequestsSessionTracker()
