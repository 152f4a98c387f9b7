"""The control plane's HTTP API: a Starlette app over a `ControlPlane`.

Handlers translate HTTP to plane operations and back; every refusal is a JSON
body naming what was wrong, and no request can take the process down. A
request whose `Host` is not an address the plane serves nor a configured name
is answered 421 (DNS rebinding: `tidegate.core.hosts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidegate.control.auth import Credentials, Refusal, lease_of, strip_notice_keys, visible
from tidegate.control.console import console_routes
from tidegate.control.eventlog import HEAD_HEADER
from tidegate.control.fanout import Subscriber
from tidegate.control.limits import WATCHER_WRITE_STALL_SECONDS
from tidegate.control.metrics_api import metrics_routes
from tidegate.control.metrics_store import MetricsStore
from tidegate.control.openapi import SPEC
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.rollouts import RolloutRunner
from tidegate.control.rollouts_api import rollout_routes, tick_forever
from tidegate.control.storage import StorageError
from tidegate.control.tokens import Role, RoleTokens
from tidegate.core.hosts import MISDIRECTED, HostCheck
from tidegate.errors import RuleError
from tidegate.rules import document_key, load_documents
from tidegate.rules import limits as rule_limits

log = logging.getLogger("tidegate.control")

Handler = Callable[[Request], Awaitable[Response]]

#: Largest request body accepted (rule files are small).
MAX_BODY = 4 * 1024 * 1024
PING_INTERVAL = 5.0
PING = b": ping\n\n"
#: The most a watch stream hands the server in one write: a watcher that does not
#: read holds at most about this much (plus the socket's buffers) of its own.
WRITE_CHUNK = 64 * 1024


def create_app(
    plane: ControlPlane,
    tokens: RoleTokens,
    open_reads: bool = False,
    ping_interval: float = PING_INTERVAL,
    hosts: HostCheck | None = None,
    write_stall: float = WATCHER_WRITE_STALL_SECONDS,
    metrics: MetricsStore | None = None,
) -> ASGIApp:
    """The API over `plane`, for callers holding one of `tokens`; `hosts` says which Host
    headers it answers (default: loopback's).

    A watch stream whose write has waited `write_stall` seconds for its client to
    read, or that was cut off (its backlog full) while waiting, is disconnected: the
    client resumes from its last revision when it reads again. A read-role watcher's
    stream carries no `notice_key` (its snapshot redacted once per snapshot, shared)."""
    auth = Credentials(tokens, open_reads)
    streams: set[_WatchStream] = set()

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
            except StorageError as error:  # the store unreachable (503), or a request past what it takes
                return JSONResponse({"error": str(error), "store": plane.storage.describe()}, status_code=error.status)
            except HTTPException:  # Starlette's own answers (a body over `MAX_BODY`: 413)
                raise
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
        # epoch: a new one at every start of the control plane (its registry is in memory)
        # store: which one, and its problem; a replica that cannot reach it answers 503,
        # so a load balancer takes it out while agents keep serving from their snapshot
        problem = await asyncio.to_thread(plane.storage.problem)
        return JSONResponse(
            {
                "status": "ok" if problem is None else "store unavailable",
                "revision": plane.revision,
                "epoch": plane.epoch,
                "watchers": len(plane.fanout),
                "instance_ttl": plane.leases.ttl,
                "store": {"name": plane.storage.describe(), "state": "ok" if problem is None else problem},
            },
            status_code=200 if problem is None else 503,
        )

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
        key = _rule_key(request)
        plane.rule(key)  # 404 when not in force
        deleted, _missing = plane.delete_rules([key], cascade=_cascade(request))
        named = next(rule for rule in deleted if rule.key == key)
        return JSONResponse({**named.to_dict(), "cascaded": [rule.to_dict() for rule in deleted if rule.key != key]})

    async def delete_rules(request: Request) -> Response:
        keys = [_envelope_key(document) for document in await _rule_documents(request)]
        deleted, missing = plane.delete_rules(keys, cascade=_cascade(request))
        return JSONResponse(
            {
                "deleted": [rule.to_dict() for rule in deleted],
                "not_in_force": ["/".join(key) for key in missing],
                "revision": plane.revision,
            }
        )

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
        plane.open_watch()  # 429 when every place is taken; given back when the response ends

        stream = _WatchStream()
        redact = request.state.role < Role.AGENT  # a read caller is shown no notice_key

        def shown(chunk: bytes) -> bytes:
            return strip_notice_keys(chunk) if redact else chunk

        async def frames() -> AsyncIterator[bytes | memoryview]:
            yield b"retry: 1000\n\n"
            # Subscribed when streaming starts, so a stream that never starts leaks no backlog.
            subscription = await plane.watch(since)
            subscriber = stream.subscriber = subscription.subscriber
            try:
                if subscription.snapshot is not None:
                    snapshot = subscription.snapshot
                    if redact:  # built once per snapshot, off the loop, for every read watcher
                        snapshot = await plane.snapshots.redacted(snapshot, strip_notice_keys)
                    # The shared bytes, a slice per write: the server waits for each to drain.
                    frame = memoryview(snapshot.frame)
                    for start in range(0, len(frame), WRITE_CHUNK):
                        yield frame[start : start + WRITE_CHUNK]
                for batch in _batches(change.frame for change in subscription.replay):
                    yield shown(batch)
                # Whole frames, each chunk (what `take` joins), so a read caller's can be redacted.
                while (live := await subscriber.take(WRITE_CHUNK)) is not None:  # None: cut off or shutting down
                    yield shown(live)
            finally:
                plane.fanout.unsubscribe(subscriber)

        # The head now: the stream is subscribed after it, so its snapshot and changes reach at
        # least this revision, and a watcher that applied up to it is current (`X-Tidegate-Head`).
        return _WatchResponse(frames(), stream, streams, plane.close_watch, head=plane.revision)

    rule_path = "/v1/rules/{namespace}/{kind}/{name}"
    routes: list[BaseRoute] = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/v1/services", read(services), methods=["GET"]),
        # :path, so a name with a '/' (refused at registration now, remembered from before) is still listed
        Route("/v1/services/{name:path}/instances", read(service_instances), methods=["GET"]),
        Route("/v1/instances", agent(register), methods=["POST"]),
        Route("/v1/instances/{id:path}/heartbeat", agent(heartbeat), methods=["PUT"]),
        Route("/v1/instances/{id:path}/state", agent(set_state), methods=["PUT"]),
        Route("/v1/instances/{id:path}", agent(deregister), methods=["DELETE"]),
        Route("/v1/rules", read(list_rules), methods=["GET"]),
        Route("/v1/rules", admin(apply_rules), methods=["POST"]),
        Route("/v1/rules", admin(delete_rules), methods=["DELETE"]),
        Route(rule_path, read(get_rule), methods=["GET"]),
        Route(rule_path, admin(delete_rule), methods=["DELETE"]),
        Route(rule_path + "/history", read(history), methods=["GET"]),
        Route(rule_path + "/rollback", admin(rollback), methods=["POST"]),
        Route("/v1/events", read(list_events), methods=["GET"]),
        Route("/v1/events", agent(post_event), methods=["POST"]),
        Route("/v1/watch", read(watch), methods=["GET"]),
    ]
    # Metrics agents push and the console (issue 16): their own modules, mounted here.
    store = metrics if metrics is not None else MetricsStore()
    routes += metrics_routes(plane, store, read, agent, _json_body)
    routes += console_routes(plane, store, tokens, watch)
    # Rollouts (issue 17): run here, on the pushed metrics, resumed from the store at start.
    runner = RolloutRunner(plane, store)
    routes += rollout_routes(runner, read, admin, _json_body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_reap_forever(plane)),
            asyncio.create_task(_upkeep_forever(plane, streams, ping_interval, write_stall)),
            asyncio.create_task(tick_forever(runner)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            plane.fanout.close_all()
            plane.snapshots.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_allowed},
        max_body_size=MAX_BODY,
    )
    guard = _HostGuard(_ConnectionHandle(app), hosts if hosts is not None else HostCheck("127.0.0.1"))
    guard.routes = app.routes
    return guard


class _WatchStream:
    """What the upkeep task knows of one open watch stream."""

    __slots__ = ("subscriber", "sending_since", "drop")

    def __init__(self) -> None:
        self.subscriber: Subscriber | None = None
        self.sending_since: float | None = None  # loop time a write began waiting, None when none waits
        self.drop: Callable[[], None] | None = None  # disconnects it (None: the server gives no handle)

    def stalled(self, now: float, write_stall: float) -> bool:
        if self.sending_since is None:
            return False
        return now - self.sending_since > write_stall or (self.subscriber is not None and self.subscriber.cut_off)


class _WatchResponse(StreamingResponse):
    """The watch stream: its writes timed for the upkeep task, `on_close` run however it ends."""

    def __init__(
        self,
        frames: AsyncIterator[bytes | memoryview],
        stream: _WatchStream,
        streams: set[_WatchStream],
        on_close: Callable[[], None],
        head: int,
    ) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", HEAD_HEADER: str(head)}
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._stream = stream
        self._streams = streams
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self._stream
        stream.drop = scope.get(_DROP_CONNECTION)
        loop = asyncio.get_running_loop()

        async def timed_send(message: Message) -> None:
            stream.sending_since = loop.time()
            try:
                await send(message)
            finally:
                stream.sending_since = None

        self._streams.add(stream)
        try:
            await super().__call__(scope, receive, timed_send)
        finally:
            self._streams.discard(stream)
            self._on_close()


#: Scope key of a function that drops the request's connection (see `_ConnectionHandle`).
_DROP_CONNECTION = "tidegate.drop_connection"


class _ConnectionHandle:
    """Put into each request's scope a way to drop its connection at once: the transport's
    `abort()` when the server is uvicorn (its `send` is a method of an object holding the
    transport). A watch stream whose client stopped reading is dropped so, rather than
    closed, which would wait for the client to read what is buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None and hasattr(transport, "abort"):
            scope[_DROP_CONNECTION] = transport.abort
        await self.app(scope, receive, send)


def _batches(frames: Iterable[bytes]) -> Iterator[bytes]:
    """Frames joined into writes of about `WRITE_CHUNK` bytes (a burst goes out in few writes)."""
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        if batch and size + len(frame) > WRITE_CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(frame)
        size += len(frame)
    if batch:
        yield b"".join(batch)


class _HostGuard:
    """Answer 421 to a request whose Host header the plane does not serve (see `HostCheck`).
    The outermost layer of the app `create_app` returns: `routes` are the API's."""

    def __init__(self, app: ASGIApp, hosts: HostCheck) -> None:
        self.app = app
        self.hosts = hosts
        self.routes: list[BaseRoute] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), None)
            if not self.hosts.allows(host):
                remedy = "to reach it by that name (a proxy, a DNS name), start it with --allowed-host NAME"
                message = self.hosts.refusal(host, "this control plane", remedy)
                await JSONResponse({"error": message}, status_code=MISDIRECTED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _reap_forever(plane: ControlPlane) -> None:
    # A quarter of the TTL keeps an expired instance's overstay short.
    interval = min(1.0, plane.leases.ttl / 4)
    while True:
        await asyncio.sleep(interval)
        plane.reap()


async def _upkeep_forever(plane: ControlPlane, streams: set[_WatchStream], interval: float, write_stall: float) -> None:
    # One ping for all watchers through the backlogs they already wait on, rather
    # than a timeout per watcher per wait (a task each, on every push); and one look
    # at every stream for writes stuck on a client that does not read.
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        plane.fanout.publish(PING)
        now = loop.time()
        for stream in [s for s in streams if s.stalled(now, write_stall)]:
            streams.discard(stream)
            if stream.drop is not None:
                log.info("control plane: dropped a watch stream whose client stopped reading")
                stream.drop()


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


async def _rule_body(request: Request) -> bytes:
    """The body of a rule request, read up to `limits.MAX_BODY_BYTES` (chunked or not): 413 past it."""
    limit = rule_limits.MAX_BODY_BYTES
    too_large = RequestError(413, f"a rule body is at most {limit} bytes (tidegate.rules.limits.MAX_BODY_BYTES); split the documents")
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _rule_documents(request: Request) -> list[Any]:
    """The documents of a rule body (YAML or JSON), parsed off the event loop; 400 naming what is wrong."""
    raw = await _rule_body(request)
    if not raw.strip():
        raise RequestError(400, "request body is empty; send YAML or JSON rule documents")
    try:
        return await asyncio.to_thread(load_documents, raw, request.headers.get("content-type", ""))
    except RuleError as error:  # the body could not be read as documents at all
        raise RequestError(400, f"rule body: {error}") from None


def _cascade(request: Request) -> bool:
    value = request.query_params.get("cascade", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise RequestError(400, f"must be true or false, got {value!r}", field="cascade")
    return value in ("true", "1")


def _envelope_key(document: Any) -> tuple[str, str, str]:
    """(namespace, kind, name) of a document named for deletion: only its envelope is read."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(document.get("kind"), str) or not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RequestError(422, "each document to delete needs a kind and a metadata.name", field="metadata.name")
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise RequestError(422, "must be a string", field="metadata.namespace")
    return document_key(document)


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
