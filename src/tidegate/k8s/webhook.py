"""`tidegate k8s webhook`: the mutating admission webhook's HTTPS server, thin over `inject`.

The API server posts an AdmissionReview v1 to `/mutate` (pods of namespaces that
did not opt in: governed only with `tidegate.io/inject: "true"`) or to
`/mutate-namespace` (the configuration's second webhook, for namespaces labelled
`tidegate.io/inject=enabled`: governed unless the pod says "false"). A body that is
no AdmissionReview is 400; every review gets an answer (the configuration's
`failurePolicy: Ignore` covers a webhook that is down). `/healthz` is for probes.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tidegate.k8s.inject import InjectSettings, review

log = logging.getLogger("tidegate.k8s")

#: Larger bodies are refused (a pod is a few KiB; the API server's own limit is 3 MiB).
MAX_BODY = 3 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
PATHS = {"/mutate": False, "/mutate-namespace": True}  # path -> the namespace opted in


class WebhookServer:
    """Serves the webhook on host:port (port 0: ephemeral; `port` once made) over TLS."""

    def __init__(self, settings: InjectSettings, cert: str, key: str, host: str = "0.0.0.0", port: int = 8443) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer((host, port), _handler_for(settings))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="tidegate-webhook", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler_for(settings: InjectSettings) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tidegate-webhook"

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(HANDSHAKE_TIMEOUT_S)
                self.request.do_handshake()
                self.request.settimeout(None)
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
            if self.path == "/healthz":
                self._json(200, {"ok": True})
            else:
                self._json(404, {"error": f"no such path {self.path!r}; the webhook takes POST /mutate and /mutate-namespace"})

        def do_POST(self) -> None:  # noqa: N802
            route = self.path.split("?", 1)[0]
            if route not in PATHS:
                self._json(404, {"error": f"no such path {route!r}; POST an AdmissionReview to /mutate or /mutate-namespace"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self._json(400 if length <= MAX_BODY else 413, {"error": f"the body must be an AdmissionReview of 1..{MAX_BODY} bytes"})
                return
            try:
                document = json.loads(self.rfile.read(length))
                answer = review(document, settings, namespace_opted_in=PATHS[route])
            except ValueError as error:  # JSON errors are ValueErrors too
                self._json(400, {"error": f"not an AdmissionReview v1: {error}"})
                return
            except Exception:  # a bug here must not stop the pod: admit it as it is, and say so in the log
                log.exception("tidegate webhook: review failed; the pod is admitted unchanged")
                answer = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": document["request"]["uid"], "allowed": True},
                }
            response = answer["response"]
            log.info(
                "tidegate webhook: %s %s",
                response["uid"],
                "patched" if "patch" in response else ("refused" if not response["allowed"] else "unchanged"),
            )
            self._json(200, answer)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("tidegate webhook: " + format, *args)

    return Handler
