"""HTTP client prewarm: open connections to the services this service calls, before it registers.

Which services: those it called in its previous life (every service name the
outbound router routed is remembered in `<state dir>/<service>.called.json`,
state dir `TIDEGATE_STATE_DIR`, default the user state directory) plus those
declared in `TIDEGATE_PREWARM_SERVICES=orders,stock`. For each routable
instance of each, every `requests.Session` the app created gets one open
connection in its urllib3 pool (a TCP connect, no request sent), so the
first calls skip the handshake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.inbound import InboundInstrumentor

if TYPE_CHECKING:
    from tidegate.agent.outbound.router import OutboundRouter
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


def state_dir() -> Path:
    configured = os.environ.get("TIDEGATE_STATE_DIR", "").strip()
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_state_dir("tidegate"))


class CalledServices:
    """The service names this service has called, kept on disk across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.names: set[str] = set(self.load())

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [str(name) for name in data] if isinstance(data, list) else []

    def add(self, name: str) -> None:
        if name in self.names:
            return
        with self._lock:
            self.names = self.names | {name} | set(self.load())  # other workers may have added theirs
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
                with os.fdopen(fd, "w") as out:
                    json.dump(sorted(self.names), out)
                os.replace(temp, self.path)
            except OSError as error:
                log.warning("tidegate: could not remember called services in %s: %s", self.path, error)


def record_calls(router: OutboundRouter, called: CalledServices) -> None:
    """Make `router.route` remember each service name it routes."""
    route: Callable[..., Any] = router.route

    def recording_route(host: str, *args: Any, **kwargs: Any) -> Any:
        found = route(host, *args, **kwargs)
        if found is not None and host not in called.names:
            called.add(host)
        return found

    router.route = recording_route  # type: ignore[method-assign]


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
    called = runtime.extras.get("called_services")
    services = sorted(set(plan.services) | (called.names if called is not None else set()))
    if not services:
        return "no service called before or declared"
    urls = [f"http://{i.host}:{i.port}/" for name in services for i in runtime.directory.routable(name)]
    sessions = list(SESSIONS)
    if not sessions:
        return f"services {', '.join(services)}: no requests.Session to fill"
    return f"services {', '.join(services)}: {open_connections(sessions, urls)} connection(s)"


INSTRUMENTOR = RequestsSessionTracker()
