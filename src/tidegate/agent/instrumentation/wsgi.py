"""Inbound WSGI middleware: counts every request by its route template, and in-flight.

Gunicorn's instrumentor wraps the app each worker loads. The template comes from
the framework hooks (flask.py, django.py), which leave it in
`environ["tidegate.route"]` once routing matched; otherwise `fallback_route`.
The request ends when the app returns its response iterable.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from tidegate.agent.instrumentation.inbound import fallback_route
from tidegate.agent.metrics import AgentMetrics

ENVIRON_KEY = "tidegate.route"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InboundWSGI:
    __slots__ = ("app", "metrics")

    def __init__(self, app: WSGIApp, metrics: AgentMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status = 500  # what the client sees when the app fails before answering

        def start_and_note_status(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            try:
                status = int(status_line[:3])
            except ValueError:
                pass
            return start_response(status_line, headers, exc_info)

        metrics = self.metrics
        metrics.request_started()
        started = time.perf_counter()
        try:
            return self.app(environ, start_and_note_status)
        finally:
            route = environ.get(ENVIRON_KEY) or fallback_route(environ.get("PATH_INFO", "/"))
            metrics.observe_inbound(route, environ.get("REQUEST_METHOD", ""), status, time.perf_counter() - started, finished=True)


def wrap_wsgi(app: Any, metrics: AgentMetrics) -> Any:
    return app if isinstance(app, InboundWSGI) else InboundWSGI(app, metrics)
