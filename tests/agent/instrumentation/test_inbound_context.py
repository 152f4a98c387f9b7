"""Inbound middleware: the request's context is entered from its headers; shared response headers are added."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidegate.agent.instrumentation.asgi import InboundASGI
from tidegate.agent.instrumentation.wsgi import InboundWSGI
from tidegate.agent.metrics import AgentMetrics
from tidegate.core import context


def run_asgi(app: InboundASGI, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["context"] = context.current()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    app.app = inner

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers, "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return seen, sent


def test_asgi_enters_the_context_and_leaves_it() -> None:
    app = InboundASGI(None, AgentMetrics())  # type: ignore[arg-type]
    seen, _ = run_asgi(app, [(b"baggage", b"a=1"), (b"baggage", b"tidegate.lane=gray"), (b"x-tidegate-consumer", b"cart")])
    assert (seen["context"].lane, seen["context"].origin, seen["context"].baggage) == ("gray", "cart", "a=1,tidegate.lane=gray")
    assert context.current() is context.EMPTY


def test_asgi_malformed_baggage_is_passed_on_and_the_request_served() -> None:
    app = InboundASGI(None, AgentMetrics())  # type: ignore[arg-type]
    seen, sent = run_asgi(app, [(b"baggage", b"=;;,tidegate.lane=no spaces allowed")])
    assert seen["context"].lane == "" and seen["context"].baggage == "=;;,tidegate.lane=no spaces allowed"
    assert sent[0]["status"] == 200


def test_asgi_baggage_members_no_header_can_carry_are_dropped_and_empty_lines_ignored() -> None:
    app = InboundASGI(None, AgentMetrics())  # type: ignore[arg-type]
    raw = [(b"baggage", b"\xff=;;,user=caf\xc3\xa9,a=1"), (b"baggage", b""), (b"baggage", b"tidegate.lane=gray")]
    seen, sent = run_asgi(app, raw)
    assert (seen["context"].lane, seen["context"].baggage) == ("gray", "a=1,tidegate.lane=gray")
    assert "2 baggage member(s)" in seen["context"].problem
    assert sent[0]["status"] == 200


def test_asgi_adds_the_shared_response_headers_while_they_are_set() -> None:
    shared: list[tuple[str, str]] = []
    app = InboundASGI(None, AgentMetrics(), shared)  # type: ignore[arg-type]
    _, sent = run_asgi(app, [])
    assert sent[0]["headers"] == [(b"content-type", b"text/plain")]
    shared.append((context.DRAINING_HEADER, "1"))
    _, sent = run_asgi(app, [])
    assert (b"x-tidegate-draining", b"1") in sent[0]["headers"]


def test_wsgi_enters_the_context_and_adds_shared_headers() -> None:
    seen: dict[str, Any] = {}
    started: list[Any] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["context"] = context.current()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = InboundWSGI(inner, AgentMetrics(), [(context.DRAINING_HEADER, "1")])
    app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTP_BAGGAGE": "tidegate.lane=blue", "HTTP_X_TIDEGATE_CONSUMER": "web"},
        lambda status, headers, exc_info=None: started.append(headers),
    )
    assert (seen["context"].lane, seen["context"].origin) == ("blue", "web")
    assert (context.DRAINING_HEADER, "1") in started[0]
    assert context.current() is context.EMPTY


def test_asgi_hands_the_servers_own_awaitable_back_and_notes_the_status() -> None:
    """The `send` the app gets is a plain function returning what the server's `send` returns."""
    metrics = AgentMetrics()
    returned: list[Any] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        awaitable = send({"type": "http.response.start", "status": 404, "headers": []})
        returned.append(awaitable)
        await awaitable
        await send({"type": "http.response.body", "body": b""})

    async def server_send(message: dict[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    app = InboundASGI(inner, metrics)
    scope = {"type": "http", "method": "GET", "path": "/missing", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, server_send))
    assert asyncio.iscoroutine(returned[0]) and returned[0].cr_code is server_send.__code__
    assert metrics.snapshot()["inbound"][0][:3] == ["/missing", "GET", 404]
    assert metrics.in_flight == 0


def test_asgi_and_wsgi_shadow_a_context_left_current_by_the_caller() -> None:
    """A request without tidegate headers runs in the empty context even when another one is current."""
    carried = context.RequestContext(lane="gray", origin="cart")
    token = context.enter(carried)
    try:
        seen, _ = run_asgi(InboundASGI(None, AgentMetrics()), [])  # type: ignore[arg-type]
        assert seen["context"] is context.EMPTY
        inside: list[context.RequestContext] = []

        def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            inside.append(context.current())
            start_response("200 OK", [])
            return [b"ok"]

        InboundWSGI(inner, AgentMetrics())({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
        assert inside == [context.EMPTY]
        assert context.current() is carried
    finally:
        context.leave(token)


def test_wsgi_names_a_request_by_the_route_a_hook_left_else_the_fallback() -> None:
    """What the WSGI middleware reads at the end: Flask clears `environ["werkzeug.request"]`
    before its app returns, so the route a hook noted during the request is what it has."""
    flask = pytest.importorskip("flask")
    from werkzeug.test import EnvironBuilder

    app = flask.Flask(__name__)

    @app.before_request
    def note_rule() -> None:  # what tidegate's Flask hook does
        if flask.request.url_rule is not None:
            flask.request.environ["tidegate.route"] = flask.request.url_rule.rule

    @app.get("/hello/<name>")
    def hello(name: str) -> dict[str, str]:
        return {"hello": name}

    metrics = AgentMetrics()
    wrapped = InboundWSGI(app, metrics)
    for path in ("/hello/world", "/nowhere/7"):
        body = wrapped(EnvironBuilder(path=path).get_environ(), lambda *a: None)
        b"".join(body)
        body.close()  # type: ignore[attr-defined]  # what every WSGI server does once the body was sent
    rows = {(row[0], row[2]) for row in metrics.snapshot()["inbound"]}
    assert rows == {("/hello/<name>", 200), ("/nowhere/*", 404)}
