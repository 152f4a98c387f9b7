"""Inbound WSGI middleware: counts every request by its route template, and in-flight.

Gunicorn's instrumentor wraps the app each worker loads. The template comes from
the framework hooks (flask.py, django.py), which leave it in
`environ["tidegate.route"]` once routing matched; otherwise `fallback_route`.
The request ends when the server closes the app's response iterable (PEP 3333:
after the body was sent, or the client went away), as OpenTelemetry's
`_end_span_after_iterating` does, so a drain never ends under a streaming
response; a body the server sends with `wsgi.file_wrapper` keeps that type.

It runs on every request, so it does only what a request needs: a request with
no tidegate headers, served while no lane rule is in force, enters no context
when the empty one is current already. `bench/agent_overhead.py` prints what it
costs per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import Any

from tidegate.agent import lanes
from tidegate.agent.instrumentation.base import inbound_problem
from tidegate.agent.instrumentation.inbound import fallback_route
from tidegate.agent.offline import drain
from tidegate.agent.runtime import Metrics
from tidegate.core import context

ENVIRON_KEY = "tidegate.route"

_EMPTY = context.EMPTY

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InboundWSGI:
    """Wraps a WSGI app. `response_headers` is shared with the agent and changed in
    place (a draining instance adds its notice); each response carries what it holds."""

    __slots__ = ("app", "metrics", "response_headers")

    def __init__(self, app: WSGIApp, metrics: Metrics, response_headers: list[tuple[str, str]] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.response_headers = response_headers if response_headers is not None else []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status = 500  # what the client sees when the app fails before answering
        extra_headers = self.response_headers

        def start_and_note_status(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            try:
                status = int(status_line[:3])
            except ValueError:
                pass
            if extra_headers:
                headers = [*headers, *extra_headers]
            return start_response(status_line, headers, exc_info)

        metrics = self.metrics
        metrics.request_started()
        started = perf_counter()
        baggage = environ.get("HTTP_BAGGAGE", "")
        consumer = environ.get("HTTP_X_TIDEGATE_CONSUMER", "")
        incoming = _EMPTY
        if baggage or consumer:
            incoming = context.from_headers(baggage, consumer)
            if incoming.problem:
                inbound_problem(incoming)
            if incoming.origin_admin:
                drain.note_consumer(incoming)  # whom a drain tells directly
        entered = lanes.color_wsgi(environ, incoming)
        # A sync worker serves one request per thread at a time, and the context is
        # reset before the thread takes the next one: the empty context a request
        # without tidegate headers runs in is usually current already.
        token = context.enter(entered) if entered is not _EMPTY or context.current() is not _EMPTY else None

        def finish() -> None:
            route = environ.get(ENVIRON_KEY) or fallback_route(environ.get("PATH_INFO", "/"))
            metrics.observe_inbound(route, environ.get("REQUEST_METHOD", ""), status, perf_counter() - started, finished=True)

        try:
            body = self.app(environ, start_and_note_status)
        except BaseException:
            finish()
            raise
        finally:
            if token is not None:
                context.leave(token)
        return _finished_on_close(body, finish, environ.get("wsgi.file_wrapper"))


class _ClosingBody:
    """The app's response iterable, ending the request when the server closes it."""

    __slots__ = ("_body", "_finish")

    def __init__(self, body: Iterable[bytes], finish: Callable[[], None]) -> None:
        self._body: Iterable[bytes] = body
        self._finish: Callable[[], None] | None = finish

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            finish, self._finish = self._finish, None
            if finish is not None:
                finish()


class _SizedClosingBody(_ClosingBody):
    """A `_ClosingBody` of a sized body (a list): servers read its length (wsgiref sets Content-Length from it)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]


def _finished_on_close(body: Iterable[bytes], finish: Callable[[], None], file_wrapper: Any) -> Iterable[bytes]:
    """`body`, calling `finish` once when the server closes it."""
    if not hasattr(body, "__iter__"):  # a server's own marker (gunicorn's ALREADY_HANDLED): nothing to send
        finish()
        return body
    closing = _SizedClosingBody(body, finish) if hasattr(body, "__len__") else _ClosingBody(body, finish)
    if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
        try:  # the server's own type, so that it can still sendfile: only its close is ours
            own_close = getattr(body, "close", None)
            body.close = closing.close  # type: ignore[attr-defined]
            closing._body = _OwnClose(own_close)
            return body
        except AttributeError:
            pass  # a wrapper with slots: wrapped like any iterable
    return closing


class _OwnClose:
    """A file wrapper's own `close`, kept when the instance's was replaced by ours."""

    __slots__ = ("_close",)

    def __init__(self, close: Callable[[], Any] | None) -> None:
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        if self._close is not None:
            self._close()


def wrap_wsgi(app: Any, metrics: Metrics, response_headers: list[tuple[str, str]] | None = None) -> Any:
    return app if isinstance(app, InboundWSGI) else InboundWSGI(app, metrics, response_headers)
