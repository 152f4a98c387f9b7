"""redis-py (sync and asyncio): Streams messages carry their lane, each lane's consumers take its messages; pools are prewarmed.

Producers: `XADD` from a request in lane L adds the field `tidegate.lane=L`
(a field the app set itself is left alone).

Consumers, by this instance's tag (`TIDEGATE_TAG`):
  - tagged L: `XREADGROUP`/`XACK`/`XCLAIM`/`XAUTOCLAIM`/`XPENDING` on group G
    use the group `G@L` instead, created on first read from the start of the
    stream; only lane-L messages reach the app, the others are acknowledged
    in `G@L` and dropped there;
  - untagged (base): messages without a lane reach the app; a message of
    lane L is acknowledged and dropped while the registry shows a live
    instance of this service tagged L, and reaches the app when it shows none.

A lane message reaches the app only after its claim key
(`tidegate:lane-claim:<stream>:<G>:<id>`, `SET NX`, kept for `CLAIM_TTL_S`) was
won (`SET NX GET`, Redis >= 7; a claim held by the same side counts as won,
so a message redelivered from the pending list after a crash is processed),
so a message the base group took while lane L had no consumer is not taken
again by `G@L` (whose group starts from the beginning of the stream so it
never misses one the base skipped). Base messages cost nothing extra.

Limits: pipelines pass through with the group renamed but unfiltered; lane
messages pending in `G@L` when its last consumer goes stay there until one
returns; the consuming code runs in no particular lane (`XREADGROUP` returns
a batch), `lane_of(fields)` tells a message's lane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.online import LosslessOnline
from tidegate.core import context
from tidegate.core.baggage import is_valid_lane

if TYPE_CHECKING:
    from types import ModuleType

    from tidegate.agent.runtime import AgentRuntime
    from tidegate.core.prewarm import PrewarmPlan

log = logging.getLogger("tidegate")

LANE_FIELD = "tidegate.lane"
CLAIM_TTL_S = 7 * 24 * 3600
DEFAULT_CONNECTIONS = 2
ASYNC_FILL_TIMEOUT_S = 30.0
SYNC_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()
ASYNC_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()

_LANE_FIELD_BYTES = LANE_FIELD.encode()
_GROUP_COMMANDS = ("xack", "xclaim", "xautoclaim", "xpending", "xpending_range")


def lane_of(fields: Any) -> str:
    """The lane a message's fields carry ("" for base or an invalid value)."""
    if not fields:
        return ""
    value = fields.get(_LANE_FIELD_BYTES)
    if value is None:
        value = fields.get(LANE_FIELD)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) and is_valid_lane(value) else ""


def lane_group(group: Any, tag: str) -> Any:
    """The consumer group of lane `tag` derived from base group `group` (same type: str or bytes)."""
    if not tag:
        return group
    if isinstance(group, bytes):
        return group + b"@" + tag.encode()
    return f"{group}@{tag}"


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@dataclass
class ReadPlan:
    """What to do with one XREADGROUP reply: keep, drop (ack), or claim first."""

    response: Any
    drop: dict[Any, list[Any]] = field(default_factory=dict)  # stream -> ids to ack and hide
    claims: list[tuple[Any, Any, str]] = field(default_factory=list)  # (stream, id, claim key)

    def filtered(self, lost: set[tuple[Any, Any]]) -> Any:
        """The reply without the dropped messages and the claims lost (`lost` holds (stream, id))."""
        hidden = {(stream, mid) for stream, ids in self.drop.items() for mid in ids} | lost
        if not hidden:
            return self.response
        if isinstance(self.response, dict):
            return {s: [m for m in msgs if (s, m[0]) not in hidden] for s, msgs in self.response.items()}
        return [[s, [m for m in msgs if (s, m[0]) not in hidden]] for s, msgs in self.response]


class StreamLanes:
    """The lane decisions of one consumer process (pure apart from reading the directory)."""

    def __init__(self, tag: str, service: str, live_tags: Callable[[], set[str]]) -> None:
        self.tag = tag
        self.service = service
        self.live_tags = live_tags
        #: What this side writes into a claim key: its lane's group, so a message
        #: redelivered to the same group (its consumer died before XACK) is still its own.
        self.claimant = f"lane:{tag}" if tag else "base"

    def owns(self, holder: Any) -> bool:
        """Whether a claim whose previous holder was `holder` (None: nobody) is ours."""
        return holder is None or _text(holder) == self.claimant

    def plan(self, group: Any, response: Any) -> ReadPlan:
        plan = ReadPlan(response)
        if not response:
            return plan
        live: set[str] | None = None
        entries = response.items() if isinstance(response, dict) else response
        for stream, messages in entries:
            for message in messages:
                mid, fields = message[0], message[1]
                lane = lane_of(fields)
                if self.tag:
                    take = lane == self.tag
                elif not lane:
                    continue  # base message, base consumer: the usual case, nothing to do
                else:
                    if live is None:
                        live = self.live_tags()
                    take = lane not in live
                if take:
                    base_group = _text(group)[: -len(self.tag) - 1] if self.tag else _text(group)
                    plan.claims.append((stream, mid, f"tidegate:lane-claim:{_text(stream)}:{base_group}:{_text(mid)}"))
                else:
                    plan.drop.setdefault(stream, []).append(mid)
        return plan


class RedisInstrumentor(Instrumentor):
    library = "redis"
    supported = ("redis >= 4.2",)

    def __init__(self) -> None:
        super().__init__()
        self._created: set[tuple[str, str]] = set()

    def _instrumented(self, runtime: AgentRuntime) -> None:
        online = runtime.capability(LosslessOnline)
        if online is not None:
            online.prewarm.add_step("redis", prewarm)

    def lanes(self) -> StreamLanes:
        runtime = self.runtime
        assert runtime is not None
        directory, service = runtime.directory, runtime.config.service
        return StreamLanes(runtime.config.tag, service, lambda: {i.tag for i in directory.routable(service) if i.tag})

    def _patch(self, module: ModuleType) -> None:
        import redis.asyncio.client
        import redis.client
        from redis.asyncio.connection import ConnectionPool as AsyncPool
        from redis.commands.core import StreamCommands
        from redis.connection import ConnectionPool

        self.wrap(ConnectionPool, "__init__", _tracker(SYNC_POOLS))
        self.wrap(AsyncPool, "__init__", _tracker(ASYNC_POOLS))

        pipelines = (redis.client.Pipeline, redis.asyncio.client.Pipeline)
        async_client = redis.asyncio.client.Redis
        # The agent's own acks and group creation use the unpatched methods (taken before patching).
        xack = StreamCommands.__dict__["xack"]
        xgroup_create = StreamCommands.__dict__["xgroup_create"]
        instrumentor = self

        def xadd(wrapped: Callable[..., Any], client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            lane = context.current().lane
            if lane:
                fields = args[1] if len(args) > 1 else kwargs.get("fields")
                if isinstance(fields, dict) and LANE_FIELD not in fields and _LANE_FIELD_BYTES not in fields:
                    fields = {**fields, LANE_FIELD: lane}
                    if len(args) > 1:
                        args = (args[0], fields, *args[2:])
                    else:
                        kwargs = {**kwargs, "fields": fields}
            return wrapped(*args, **kwargs)

        def renamed(position: int, name: str) -> Callable[..., Any]:
            def rename(wrapped: Callable[..., Any], client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                tag = instrumentor.runtime.config.tag if instrumentor.runtime is not None else ""
                if tag:
                    if len(args) > position:
                        args = (*args[:position], lane_group(args[position], tag), *args[position + 1 :])
                    elif name in kwargs:
                        kwargs = {**kwargs, name: lane_group(kwargs[name], tag)}
                return wrapped(*args, **kwargs)

            return rename

        def xreadgroup(wrapped: Callable[..., Any], client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if instrumentor.runtime is None:
                return wrapped(*args, **kwargs)
            lanes = instrumentor.lanes()
            group = args[0] if args else kwargs["groupname"]
            streams = args[2] if len(args) > 2 else kwargs.get("streams", {})
            if lanes.tag:
                group = lane_group(group, lanes.tag)
                args, kwargs = ((group, *args[1:]), kwargs) if args else (args, {**kwargs, "groupname": group})
            if isinstance(client, pipelines):
                return wrapped(*args, **kwargs)
            if isinstance(client, async_client):
                return _read_async(client, wrapped, args, kwargs, lanes, group, streams)
            if lanes.tag:
                for stream in streams:
                    instrumentor._ensure_group(client, stream, group, xgroup_create)
            plan = lanes.plan(group, wrapped(*args, **kwargs))
            lost: set[tuple[Any, Any]] = set()
            if plan.claims:
                pipe = client.pipeline(transaction=False)
                for _, _, key in plan.claims:
                    pipe.set(key, lanes.claimant, nx=True, ex=CLAIM_TTL_S, get=True)
                for (stream, mid, _), holder in zip(plan.claims, pipe.execute()):
                    if not lanes.owns(holder):
                        lost.add((stream, mid))
                        plan.drop.setdefault(stream, []).append(mid)
            for stream, ids in plan.drop.items():
                xack(client, stream, group, *ids)
            return plan.filtered(lost)

        async def _read_async(
            client: Any,
            wrapped: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            lanes: StreamLanes,
            group: Any,
            streams: Any,
        ) -> Any:
            if lanes.tag:
                for stream in streams:
                    await instrumentor._ensure_group_async(client, stream, group, xgroup_create)
            plan = lanes.plan(group, await wrapped(*args, **kwargs))
            lost: set[tuple[Any, Any]] = set()
            if plan.claims:
                async with client.pipeline(transaction=False) as pipe:
                    for _, _, key in plan.claims:
                        pipe.set(key, lanes.claimant, nx=True, ex=CLAIM_TTL_S, get=True)
                    results = await pipe.execute()
                for (stream, mid, _), holder in zip(plan.claims, results):
                    if not lanes.owns(holder):
                        lost.add((stream, mid))
                        plan.drop.setdefault(stream, []).append(mid)
            for stream, ids in plan.drop.items():
                await xack(client, stream, group, *ids)
            return plan.filtered(lost)

        self.wrap(StreamCommands, "xadd", xadd)
        self.wrap(StreamCommands, "xreadgroup", xreadgroup)
        for command in _GROUP_COMMANDS:
            self.wrap(StreamCommands, command, renamed(1, "groupname"))

    def _ensure_group(self, client: Any, stream: Any, group: Any, create: Callable[..., Any]) -> None:
        import redis

        key = (_text(stream), _text(group))
        if key in self._created:
            return
        try:
            create(client, stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._created.add(key)

    async def _ensure_group_async(self, client: Any, stream: Any, group: Any, create: Callable[..., Any]) -> None:
        import redis

        key = (_text(stream), _text(group))
        if key in self._created:
            return
        try:
            await create(client, stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._created.add(key)


# -- lossless online: prewarm ---------------------------------------------------------------------


def _tracker(into: weakref.WeakSet[Any]) -> Any:
    def track(wrapped: Any, pool: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        into.add(pool)
        return result

    return track


def connections_wanted(pool: Any) -> int:
    text = os.environ.get("TIDEGATE_PREWARM_REDIS_CONNECTIONS", "").strip()
    wanted = int(text) if text.isdigit() else DEFAULT_CONNECTIONS
    maximum = getattr(pool, "max_connections", None)
    return min(wanted, maximum) if isinstance(maximum, int) and maximum > 0 else wanted


def fill(pool: Any) -> int:
    held = []
    try:
        for _ in range(connections_wanted(pool)):
            connection = pool.get_connection("PING")
            held.append(connection)
            connection.send_command("PING")
            connection.read_response()
    finally:
        for connection in held:
            pool.release(connection)
    return len(held)


async def fill_async(pool: Any) -> int:
    held = []
    try:
        for _ in range(connections_wanted(pool)):
            connection = await pool.get_connection("PING")
            held.append(connection)
            await connection.send_command("PING")
            await connection.read_response()
    finally:
        for connection in held:
            await pool.release(connection)
    return len(held)


def prewarm(plan: PrewarmPlan, loop: asyncio.AbstractEventLoop | None) -> str:
    opened = 0
    pools = 0
    for pool in list(SYNC_POOLS):
        pools += 1
        try:
            opened += fill(pool)
        except Exception as error:
            log.warning("tidegate: prewarming redis pool %r failed: %s", pool, error)
    for pool in list(ASYNC_POOLS):
        pools += 1
        if loop is None:
            continue
        try:
            opened += asyncio.run_coroutine_threadsafe(fill_async(pool), loop).result(ASYNC_FILL_TIMEOUT_S)
        except Exception as error:
            log.warning("tidegate: prewarming redis pool %r failed: %s", pool, error)
    return f"{opened} connection(s) in {pools} pool(s)" if pools else "no pool"


INSTRUMENTOR = RedisInstrumentor()
