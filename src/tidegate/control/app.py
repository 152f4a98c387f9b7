"""The control plane's HTTP API: a Starlette app over a `ControlPlane`.

Handlers translate HTTP to plane operations and back; every refusal is a JSON
body naming what was wrong, and no request can take the process down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tidegate.control.auth import Credentials, Refusal, lease_of, visible, without_notice_keys
from tidegate.control.eventlog import encode_frame
from tidegate.control.openapi import SPEC
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.tokens import Role, RoleTokens
from tidegate.errors import RuleError
from tidegate.rules import load_documents

log = logging.getLogger("tidegate.control")

Handler = Callable[[Request], Awaitable[Response]]

#: Largest request body accepted (rule files are small).
MAX_BODY = 4 * 1024 * 1024
PING_INTERVAL = 5.0
#: Nodes a YAML rule body may have once its aliases are expanded.
MAX_YAML_NODES = 100_000
PING = b": ping\n\n"


def create_app(plane: ControlPlane, tokens: RoleTokens, open_reads: bool = False, ping_interval: float = PING_INTERVAL) -> Starlette:
    auth = Credentials(tokens, open_reads)

    def guarded(handler: Handler, needs: Role) -> Handler:
        """`handler` for callers holding `needs` (or a higher role), which it finds in `request.state.role`."""

        async def endpoint(request: Request) -> Response:
            role = auth.role(request, needs)
            if isinstance(role, Refusal):
                headers = {"WWW-Authenticate": "Bearer"} if role.status == 401 else None
                return JSONResponse({"error": role.message}, status_code=role.status, headers=headers)
            request.state.role = role
            try:
                return await handler(request)
            except RequestError as error:
                return JSONResponse(error.to_dict(), status_code=error.status)
            except RuleError as error:
                return JSONResponse({"error": str(error), "field": error.field, "document": error.document}, status_code=422)
            except Exception as error:  # a bug (say, in a rule kind's parser) answers 500; the server carries on
                log.exception("control plane: %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": f"internal error: {error!r}"}, status_code=500)

        return endpoint

    def read(handler: Handler) -> Handler:
        return guarded(handler, Role.READ)

    def agent(handler: Handler) -> Handler:
        return guarded(handler, Role.AGENT)

    def admin(handler: Handler) -> Handler:
        return guarded(handler, Role.ADMIN)

    async def health(request: Request) -> Response:
        # instance_ttl: agents heartbeat every third of it
        return JSONResponse({"status": "ok", "revision": plane.revision, "watchers": len(plane.fanout), "instance_ttl": plane.leases.ttl})

    async def openapi(request: Request) -> Response:
        return JSONResponse(SPEC)

    async def services(request: Request) -> Response:
        return JSONResponse(plane.services())

    async def service_instances(request: Request) -> Response:
        role = request.state.role
        return JSONResponse([visible(i.to_dict(), role) for i in plane.instances(request.path_params["name"])])

    async def register(request: Request) -> Response:
        instance = plane.register(await _json_body(request), request.state.role)
        return JSONResponse(instance.to_dict(), status_code=201)

    async def heartbeat(request: Request) -> Response:
        plane.heartbeat(request.path_params["id"], request.state.role, lease_of(request))
        return JSONResponse({"status": "ok", "revision": plane.revision})

    async def set_state(request: Request) -> Response:
        body = await _json_body(request)
        return JSONResponse(plane.set_state(request.path_params["id"], body, request.state.role, lease_of(request)).to_dict())

    async def deregister(request: Request) -> Response:
        plane.deregister(request.path_params["id"], request.state.role, lease_of(request))
        return JSONResponse({"status": "deleted", "revision": plane.revision})

    async def list_rules(request: Request) -> Response:
        query = request.query_params
        return JSONResponse([r.to_dict() for r in plane.rules(query.get("namespace"), query.get("kind"))])

    async def apply_rules(request: Request) -> Response:
        return JSONResponse(plane.apply_rules(await _rule_documents(request)))

    async def get_rule(request: Request) -> Response:
        return JSONResponse(plane.rule(_rule_key(request)).to_dict())

    async def delete_rule(request: Request) -> Response:
        return JSONResponse(plane.delete_rule(_rule_key(request)).to_dict())

    async def history(request: Request) -> Response:
        return JSONResponse([entry.to_dict() for entry in plane.history(_rule_key(request))])

    async def rollback(request: Request) -> Response:
        return JSONResponse(plane.rollback(_rule_key(request), await _json_body(request)))

    async def list_events(request: Request) -> Response:
        return JSONResponse(plane.recent_events())

    async def post_event(request: Request) -> Response:
        return JSONResponse(plane.post_event(await _json_body(request)), status_code=201)

    async def watch(request: Request) -> Response:
        since = _since(request)

        async def frames() -> AsyncIterator[bytes]:
            # Subscribed when streaming starts, so a stream that never starts leaks no queue.
            snapshot, replay, queue = plane.watch(since)
            try:
                yield b"retry: 1000\n\n"
                if snapshot is not None:
                    yield encode_frame("snapshot", snapshot["revision"], snapshot)
                for change in replay:
                    yield change.frame
                while True:
                    batch = [await queue.get()]
                    while not queue.empty():  # a burst goes out in one write
                        batch.append(queue.get_nowait())
                    if None in batch:  # cut off (too slow) or shutting down
                        if batch.index(None):
                            yield b"".join(batch[: batch.index(None)])  # type: ignore[arg-type]
                        return
                    yield b"".join(batch)  # type: ignore[arg-type]
            finally:
                plane.fanout.unsubscribe(queue)

        return StreamingResponse(
            frames() if request.state.role >= Role.AGENT else without_notice_keys(frames()),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    rule_path = "/v1/rules/{namespace}/{kind}/{name}"
    routes = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/v1/services", read(services), methods=["GET"]),
        Route("/v1/services/{name}/instances", read(service_instances), methods=["GET"]),
        Route("/v1/instances", agent(register), methods=["POST"]),
        Route("/v1/instances/{id:path}/heartbeat", agent(heartbeat), methods=["PUT"]),
        Route("/v1/instances/{id:path}/state", agent(set_state), methods=["PUT"]),
        Route("/v1/instances/{id:path}", agent(deregister), methods=["DELETE"]),
        Route("/v1/rules", read(list_rules), methods=["GET"]),
        Route("/v1/rules", admin(apply_rules), methods=["POST"]),
        Route(rule_path, read(get_rule), methods=["GET"]),
        Route(rule_path, admin(delete_rule), methods=["DELETE"]),
        Route(rule_path + "/history", read(history), methods=["GET"]),
        Route(rule_path + "/rollback", admin(rollback), methods=["POST"]),
        Route("/v1/events", read(list_events), methods=["GET"]),
        Route("/v1/events", agent(post_event), methods=["POST"]),
        Route("/v1/watch", read(watch), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_reap_forever(plane)), asyncio.create_task(_ping_forever(plane, ping_interval))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            plane.fanout.close_all()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_allowed},
        max_body_size=MAX_BODY,
    )


async def _reap_forever(plane: ControlPlane) -> None:
    # A quarter of the TTL keeps an expired instance's overstay short.
    interval = min(1.0, plane.leases.ttl / 4)
    while True:
        await asyncio.sleep(interval)
        plane.reap()


async def _ping_forever(plane: ControlPlane, interval: float) -> None:
    # One ping for all watchers through the queues they already wait on, rather
    # than a timeout per watcher per wait (a task each, on every push).
    while True:
        await asyncio.sleep(interval)
        plane.fanout.publish(PING)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"no such endpoint: {request.method} {request.url.path} (see /v1/openapi.json)"}, status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; stored, they would break every later read.
    raise RequestError(400, f"request body is not valid JSON: {name} is not a JSON number")


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise RequestError(400, f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as bad:
        raise RequestError(400, f"{what} is not valid JSON: {bad.msg} at line {bad.lineno}, column {bad.colno}") from None


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise RequestError(400, "request body is empty; send a JSON object")
    return _parse_json(raw, "request body")


async def _rule_documents(request: Request) -> list[Any]:
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    looks_json = "json" in content_type or raw.lstrip()[:1] in (b"{", b"[")
    try:
        if looks_json:
            loaded = _parse_json(raw, "rule body")
            documents = loaded if isinstance(loaded, list) else [loaded]
            if not documents:
                raise RequestError(400, "no rule document in the request")
            return documents
        _refuse_alias_bombs(raw)
        return list(load_documents(raw))
    except RuleError as error:  # the body could not be read as documents at all
        raise RequestError(400, str(error)) from None


def _refuse_alias_bombs(raw: bytes) -> None:
    """Refuse YAML whose aliases expand past `MAX_YAML_NODES` nodes: a few lines
    of nested aliases can otherwise expand to gigabytes once stored as JSON."""
    try:
        roots = list(yaml.compose_all(raw, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return  # load_documents reports the syntax error with its position
    budget = MAX_YAML_NODES
    stack: list[yaml.Node] = [root for root in roots if root is not None]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise RequestError(400, f"rule body expands (through YAML aliases) to more than {MAX_YAML_NODES} nodes")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def _rule_key(request: Request) -> tuple[str, str, str]:
    params = request.path_params
    return (params["namespace"], params["kind"], params["name"])


def _since(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("since")
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise RequestError(400, f"must be an integer revision, got {text!r}", field="since") from None
