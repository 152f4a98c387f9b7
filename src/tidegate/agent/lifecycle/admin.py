"""The per-instance admin endpoint: readiness, liveness, state and metrics (127.0.0.1 by default).

A stdlib `ThreadingHTTPServer` on a daemon thread, so it serves the same inside a
sync worker server and an asyncio one, and never touches the app's event loop.
Reads are open. A write needs `Authorization: Bearer <lease_secret>` of one of
this process's instances (from anywhere: what a control plane or an operator
holding `<state dir>/<service>.admin.json` sends), or the agent's own token from a
loopback peer (a preStop hook in the same pod); a write marked `signed` (a drain
notice) authenticates itself and needs neither. Requests whose `Host` is a name
it does not serve are refused (421: a DNS-rebinding guard, `tidegate.core.hosts`).
With a TLS context (`TIDEGATE_ADMIN_CERT`/`TIDEGATE_ADMIN_KEY`) it serves HTTPS,
the handshake done in the connection's own thread. Besides its own `/log-level`,
the writes are those the capabilities add (lossless offline's `/offline`,
`/online`, `/drain-notice`), handed in as `writes`.

No client can stall the agent through it: an answer is built inside the fork
gate but read from and written to the socket outside it (a client that never
reads holds only its own thread); every socket read and write times out
(`IO_TIMEOUT_S`: a connection that sends no request by then is closed); at most
`MAX_CONNECTIONS` connections are served at once (a connection over that is
closed at once), and a body over `MAX_BODY` is refused with 413.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from tidegate.agent.capability import AdminRoute, SignedBody
from tidegate.agent.forking import FORK_GATE
from tidegate.core.hosts import MISDIRECTED, HostCheck
from tidegate.core.trust import is_loopback

log = logging.getLogger("tidegate")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A TLS client that has not finished its handshake by then is dropped.
HANDSHAKE_TIMEOUT_S = 5.0
#: Each read and write on an admin connection, and an idle keep-alive connection, times out after this.
IO_TIMEOUT_S = 5.0
#: Connections served at once (one thread each); one more is closed unanswered.
MAX_CONNECTIONS = 32
#: The largest admin write body (a drain notice or a log level is a few hundred bytes).
MAX_BODY = 64 * 1024


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


def write_refusal(authorization: str | None, peer: str, token: str, lease_secrets: Collection[str]) -> tuple[int, str] | None:
    """Why an admin write from `peer` (an IP address) with this `Authorization` is refused, or None."""
    if any(bearer_ok(authorization, secret) for secret in lease_secrets):
        return None
    if bearer_ok(authorization, token):
        if is_loopback(peer):
            return None
        return 403, "the agent's token is taken only from this host (loopback); from elsewhere send 'Authorization: Bearer <lease_secret>'"
    if not token and not lease_secrets:
        return 403, "admin writes are disabled: the agent has no TIDEGATE_TOKEN and no registered instance yet"
    return 401, (
        "admin writes need 'Authorization: Bearer <lease_secret>' (see <state dir>/<service>.admin.json)"
        " or, from this host, the agent's token (TIDEGATE_TOKEN_FILE)"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: Connections a thread serves now: bounded so that idle clients cannot make a thread each.
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.debug("tidegate admin: %d connections open already; closing the one from %s", MAX_CONNECTIONS, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away, or failed its TLS handshake: nothing for the app's log.
        log.debug("tidegate admin: request from %s failed", client_address, exc_info=True)


class AdminServer:
    """Serves `view` and `writes` on host:port (port 0: ephemeral; see `port` once started).

    `lease_secrets()` are the secrets of this process's instances; `names` the host names the
    endpoint is called by besides its bound address and localhost (`tidegate.core.hosts.HostCheck`);
    `tls` a server-side context."""

    def __init__(
        self,
        view: AdminView,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        writes: Mapping[str, AdminRoute] | None = None,
        lease_secrets: Callable[[], Collection[str]] = tuple,
        tls: ssl.SSLContext | None = None,
        names: Iterable[str] = (),
    ) -> None:
        handler = _handler_for(view, token, writes or {}, lease_secrets, HostCheck(host, names))
        self._server = _Server((host, port), handler)
        self._server.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.tls = tls is not None
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


def _handler_for(
    view: AdminView,
    token: str,
    extra_writes: Mapping[str, AdminRoute],
    lease_secrets: Callable[[], Collection[str]],
    hosts: HostCheck,
) -> type[BaseHTTPRequestHandler]:
    writes = {"/log-level": AdminRoute(_set_log_level), **extra_writes}

    class Handler(BaseHTTPRequestHandler):
        server_version = "tidegate-admin"
        timeout = IO_TIMEOUT_S  # every socket read and write, so a client that never reads stalls only itself

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(HANDSHAKE_TIMEOUT_S)
                self.request.do_handshake()
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
            if self._misdirected():
                return
            with FORK_GATE:  # the answer is built inside the gate and sent outside it
                answer = self._get()
            self._send(*answer)

        def do_POST(self) -> None:  # noqa: N802
            if self._misdirected():
                return
            route, _, query = self.path.partition("?")
            action = writes.get(route)
            if action is None:
                self._json(404, {"error": f"no such admin write {route!r}; try {', '.join(sorted(writes))}"})
                return
            if not action.signed:
                refused = write_refusal(self.headers.get("Authorization"), self.client_address[0], token, lease_secrets())
                if refused is not None:
                    self._json(refused[0], {"error": refused[1]})
                    return
            raw = self._body()
            if raw is None:
                return
            if action.signed:
                body: Any = SignedBody(raw, self.headers.get("X-Tidegate-Signature") or "")
            else:
                try:
                    body = json.loads(raw or b"null")
                except ValueError as error:
                    self._json(400, {"error": f"body is not JSON: {error}"})
                    return
            if not action.gated:  # long writes (a drain) take the gate only where they need it
                status, answer = action.write(body, parse_qs(query))
            else:
                with FORK_GATE:
                    status, answer = action.write(body, parse_qs(query))
            self._json(status, answer)

        def _get(self) -> tuple[int, bytes, str]:
            route = self.path.split("?", 1)[0]
            if route == "/live":
                return _json_answer(200, {"live": True})
            if route == "/ready":
                ready = view.ready()
                return _json_answer(200 if ready else 503, {"ready": ready, "state": view.state()["state"]})
            if route == "/state":
                return _json_answer(200, view.state())
            if route == "/metrics":
                return 200, view.metrics_text(), CONTENT_TYPE_LATEST
            return _json_answer(404, {"error": f"no such admin path {route!r}; try /ready, /live, /state, /metrics"})

        def _body(self) -> bytes | None:
            """The request's body (read outside the fork gate); None when refused, answered already."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self._json(413 if length > MAX_BODY else 400, {"error": f"Content-Length must be 0..{MAX_BODY}"})
                return None
            return self.rfile.read(length) if length else b""

        def _misdirected(self) -> bool:
            """Refuse (421) a request whose Host names no address this endpoint serves."""
            host = self.headers.get("Host")
            if hosts.allows(host):
                return False
            remedy = "call it by one of those (TIDEGATE_HOST adds the name its instances advertise)"
            self._json(MISDIRECTED, {"error": hosts.refusal(host, "this admin endpoint", remedy)})
            return True

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(*_json_answer(status, body))

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("tidegate admin: " + format, *args)

    return Handler


def _json_answer(status: int, body: dict[str, Any]) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode(), "application/json"


def _set_log_level(body: Any, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
    level = body.get("level") if isinstance(body, dict) else None
    if not isinstance(level, str) or level.upper() not in _LOG_LEVELS:
        return 400, {"error": f"field 'level' must be one of {', '.join(_LOG_LEVELS)}; got {level!r}"}
    logging.getLogger("tidegate").setLevel(level.upper())
    return 200, {"level": level.upper()}
