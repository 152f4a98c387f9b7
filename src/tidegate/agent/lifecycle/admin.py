"""The per-instance admin endpoint: readiness, liveness, state and metrics on loopback.

A stdlib `ThreadingHTTPServer` on a daemon thread, so it serves the same inside a
sync worker server and an asyncio one, and never touches the app's event loop.
Reads are open; every write needs `Authorization: Bearer <TIDEGATE_TOKEN>` and is
refused outright when the agent has no token. Besides its own `/log-level`, the
writes are those the capabilities add (lossless offline's `/offline`, `/online`,
`/drain-notice`), handed in as `writes`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from tidegate.agent.capability import AdminRoute
from tidegate.agent.forking import FORK_GATE

log = logging.getLogger("tidegate")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class AdminView(Protocol):
    """What the admin endpoint shows; the lifecycle provides it."""

    def ready(self) -> bool: ...

    def state(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...


def bearer_ok(authorization: str | None, token: str) -> bool:
    """True when `authorization` carries `token`; always False without a configured token."""
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class AdminServer:
    """Serves `view` and `writes` on host:port (port 0: ephemeral; see `port` once started)."""

    def __init__(
        self, view: AdminView, token: str, host: str = "127.0.0.1", port: int = 0, writes: Mapping[str, AdminRoute] | None = None
    ) -> None:
        handler = _handler_for(view, token, writes or {})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tidegate-admin", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def close_inherited(self) -> None:
        """In a forked child: drop our copy of the listening socket, leave the parent's alone."""
        self._server.socket.close()


def _handler_for(view: AdminView, token: str, extra_writes: Mapping[str, AdminRoute]) -> type[BaseHTTPRequestHandler]:
    writes = {"/log-level": AdminRoute(_set_log_level), **extra_writes}
    ungated = frozenset(path for path, route in writes.items() if not route.gated)

    class Handler(BaseHTTPRequestHandler):
        server_version = "tidegate-admin"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
            with FORK_GATE:
                self._get()

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] in ungated:  # long writes (a drain) take the gate only where they need it
                self._post()
                return
            with FORK_GATE:
                self._post()

        def _get(self) -> None:
            route = self.path.split("?", 1)[0]
            if route == "/live":
                self._json(200, {"live": True})
            elif route == "/ready":
                ready = view.ready()
                self._json(200 if ready else 503, {"ready": ready, "state": view.state()["state"]})
            elif route == "/state":
                self._json(200, view.state())
            elif route == "/metrics":
                self._send(200, view.metrics_text(), CONTENT_TYPE_LATEST)
            else:
                self._json(404, {"error": f"no such admin path {route!r}; try /ready, /live, /state, /metrics"})

        def _post(self) -> None:
            route, _, query = self.path.partition("?")
            action = writes.get(route)
            if action is None:
                self._json(404, {"error": f"no such admin write {route!r}; try {', '.join(sorted(writes))}"})
                return
            if not token:
                self._json(403, {"error": "admin writes are disabled: the agent has no TIDEGATE_TOKEN"})
                return
            if not bearer_ok(self.headers.get("Authorization"), token):
                self._json(401, {"error": "admin writes need 'Authorization: Bearer <TIDEGATE_TOKEN>'"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as error:
                self._json(400, {"error": f"body is not JSON: {error}"})
                return
            status, answer = action.write(body, parse_qs(query))
            self._json(status, answer)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("tidegate admin: " + format, *args)

    return Handler


def _set_log_level(body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
    level = body.get("level") if isinstance(body, dict) else None
    if not isinstance(level, str) or level.upper() not in _LOG_LEVELS:
        return 400, {"error": f"field 'level' must be one of {', '.join(_LOG_LEVELS)}; got {level!r}"}
    logging.getLogger("tidegate").setLevel(level.upper())
    return 200, {"level": level.upper()}
