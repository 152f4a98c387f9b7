"""The framework route hooks decide a request once, and step aside while no rule names an inbound resource.

A real FastAPI app on a real uvicorn server (in a thread, on a loopback
socket), and a real Flask app on wsgiref, with the Starlette and Flask
instrumentors applied to an in-process runtime whose Stability reads rules
from its rule book. FastAPI's `APIRoute.handle` calls Starlette's
`Route.handle` for the same route: the request is decided once. Uninstrumented
and instrumented again (as tests do), the hooks are back on both classes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import uvicorn
import wrapt

from tests.support.procs import free_port, wait_until
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation import route_guard
from tidegate.agent.instrumentation import starlette as starlette_hooks
from tidegate.agent.instrumentation.flask import INSTRUMENTOR as FLASK
from tidegate.agent.instrumentation.starlette import INSTRUMENTOR as STARLETTE
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.rulebook import StoredRule


def _runtime() -> tuple[AgentRuntime, Stability]:
    runtime = AgentRuntime(config=AgentConfig(service="shop"), metrics=AgentMetrics())
    stability = runtime.add(Stability(runtime, events=StabilityEvents(lambda event: None, "shop", flush_s=3600)))
    runtime.rulebook.add_listener(stability.on_rules_changed)
    return runtime, stability


def _limit(runtime: AgentRuntime, resource: str, threshold: int) -> None:
    document = {
        "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
        "kind": "FaultToleranceRule",
        "metadata": {"name": "limit"},
        "spec": {
            "selector": {"app": "shop"},
            "targets": [{"targetResourceName": resource}],
            "strategies": [{"kind": "RateLimitStrategy", "spec": {"threshold": threshold, "statDurationSeconds": 1}}],
        },
    }
    runtime.rulebook.put(StoredRule("default", "FaultToleranceRule", "limit", 1, document))


class _Decisions:
    """Counts the route hooks' decisions: `governs_inbound` per resource, and `govern_asgi` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stability: Stability) -> None:
        self.resources: list[str] = []
        self.govern_calls = 0
        decide = stability.governs_inbound
        govern = starlette_hooks.govern_asgi

        def counting_decide(resource: str) -> bool:
            self.resources.append(resource)
            return decide(resource)

        def counting_govern(*args: Any) -> Any:
            self.govern_calls += 1
            return govern(*args)

        monkeypatch.setattr(stability, "governs_inbound", counting_decide)
        monkeypatch.setattr(starlette_hooks, "govern_asgi", counting_govern)


@pytest.fixture
def fastapi_server() -> Iterator[tuple[str, AgentRuntime, Stability]]:
    FastAPI = pytest.importorskip("fastapi").FastAPI  # not in the oldest-versions venv

    runtime, stability = _runtime()
    STARLETTE.instrument(runtime)
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"item": item_id}

    @app.get("/users/{user}")
    def user(user: str) -> dict[str, str]:
        return {"user": user}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to listen")
        yield f"http://127.0.0.1:{port}", runtime, stability
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        STARLETTE.uninstrument()


def test_an_ungoverned_fastapi_route_is_decided_once(
    fastapi_server: tuple[str, AgentRuntime, Stability], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, runtime, stability = fastapi_server
    _limit(runtime, "GET /items/{item_id}", 1)  # a rule in force, naming another route
    decisions = _Decisions(monkeypatch, stability)
    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(f"{base}/users/u1").status_code == 200
    assert decisions.resources == ["GET /users/{user}"]  # APIRoute.handle and Route.handle: one decision


def test_a_governed_fastapi_route_is_admitted_once_and_refused_past_its_limit(
    fastapi_server: tuple[str, AgentRuntime, Stability], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, runtime, stability = fastapi_server
    _limit(runtime, "GET /items/{item_id}", 1)
    admitted: list[str] = []
    admit = route_guard.admit

    def counting_admit(stability: Stability, resource: str, *args: Any) -> Any:
        admitted.append(resource)
        return admit(stability, resource, *args)

    monkeypatch.setattr(route_guard, "admit", counting_admit)
    with httpx.Client(timeout=10, trust_env=False) as client:
        answers = [client.get(f"{base}/items/{n}").status_code for n in range(3)]
    assert answers[0] == 200 and 429 in answers, answers
    assert admitted == ["GET /items/{item_id}"] * 3  # one admission per request, not one per hook


def test_no_inbound_rule_hands_the_request_straight_to_the_route(
    fastapi_server: tuple[str, AgentRuntime, Stability], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, stability = fastapi_server
    decisions = _Decisions(monkeypatch, stability)
    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(f"{base}/items/1").json() == {"item": "1"}
    assert decisions.govern_calls == 0 and decisions.resources == []


def test_instrumented_again_the_hooks_are_back_on_both_route_classes(
    fastapi_server: tuple[str, AgentRuntime, Stability], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    base, runtime, stability = fastapi_server
    if "handle" not in APIRoute.__dict__:
        pytest.skip("this FastAPI's APIRoute has no handle of its own")
    STARLETTE.uninstrument()
    assert not isinstance(APIRoute.__dict__["handle"], wrapt.FunctionWrapper)
    STARLETTE.instrument(runtime)
    assert isinstance(APIRoute.__dict__["handle"], wrapt.FunctionWrapper)
    assert isinstance(Route.__dict__["handle"], wrapt.FunctionWrapper)
    _limit(runtime, "GET /items/{item_id}", 1)
    decisions = _Decisions(monkeypatch, stability)
    with httpx.Client(timeout=10, trust_env=False) as client:
        answers = [client.get(f"{base}/items/{n}").status_code for n in range(3)]
    assert answers[0] == 200 and 429 in answers, answers
    assert decisions.resources == ["GET /items/{item_id}"] * 3


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_flask_without_an_inbound_rule_skips_the_guard_and_still_names_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    Flask = pytest.importorskip("flask").Flask

    from tidegate.agent.instrumentation import flask as flask_hooks
    from tidegate.agent.instrumentation.wsgi import InboundWSGI

    runtime, stability = _runtime()
    guarded: list[object] = []
    govern = flask_hooks.govern_flask
    monkeypatch.setattr(flask_hooks, "govern_flask", lambda *args: guarded.append(args) or govern(*args))
    FLASK.instrument(runtime)
    try:
        app = Flask("hooks")

        @app.get("/users/<int:user_id>")
        def user(user_id: int) -> dict[str, int]:
            return {"user": user_id}

        metrics = runtime.metrics
        assert isinstance(metrics, AgentMetrics)
        server = make_server("127.0.0.1", 0, InboundWSGI(app, metrics), handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with httpx.Client(timeout=10, trust_env=False) as client:
                assert client.get(f"http://127.0.0.1:{server.server_port}/users/7").json() == {"user": 7}
                assert guarded == []  # no rule in force: the view runs without the guard
                _limit(runtime, "GET /users/<int:user_id>", 1)
                answers = [client.get(f"http://127.0.0.1:{server.server_port}/users/7").status_code for _ in range(3)]
            assert answers[0] == 200 and 429 in answers, answers
            assert len(guarded) == 3
        finally:
            server.shutdown()
            server.server_close()
        routes = {row[0] for row in metrics.snapshot()["inbound"]}
        assert routes == {"/users/<int:user_id>"}, routes  # the matched rule, from the hook
    finally:
        FLASK.uninstrument()
