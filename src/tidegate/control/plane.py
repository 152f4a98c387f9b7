"""The control plane's state and every operation on it, without HTTP.

Registry (instances, leased by heartbeat, in memory), rule store (persisted,
every write a new revision), the change log and the push to watchers. Every
method runs on the server's event loop thread, one at a time, so a snapshot
and the subscription that follows it see the same revision.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from tidegate.control.eventlog import Change, EventLog
from tidegate.control.fanout import Fanout
from tidegate.control.leases import Leases
from tidegate.control.storage import RuleRevision, Storage
from tidegate.control.tokens import Role
from tidegate.core.instance import Instance, InstanceState, can_transition
from tidegate.core.rulebook import RuleKey, StoredRule
from tidegate.errors import RuleError
from tidegate.rules import document_key, validate

#: Agent-reported events kept for the console.
RECENT_EVENTS = 200
MAX_EVENT_BYTES = 16 * 1024
#: A registration's `lease_secret` and `notice_key`: url-safe text of these lengths
#: (`secrets.token_urlsafe(32)` makes 43 characters).
SECRET_LENGTHS = (16, 256)
_SECRET = re.compile(r"[A-Za-z0-9_-]+")


class RequestError(Exception):
    """A request the control plane refuses; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return body


class ControlPlane:
    """Registry + rule store + change stream, over a `Storage`."""

    def __init__(
        self,
        storage: Storage,
        instance_ttl: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log_capacity: int = 10_000,
    ) -> None:
        self.storage = storage
        self.leases = Leases(instance_ttl)
        self.fanout = Fanout()
        self._clock = clock
        self._wall_clock = wall_clock
        self._instances: dict[str, Instance] = {}
        self._services = set(storage.services())
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        # Instances did not survive the restart, and that loss is no replayable
        # change: a new revision makes every watcher from before take a snapshot.
        self.log = EventLog(floor=storage.next_revision(), capacity=log_capacity)

    @property
    def revision(self) -> int:
        return self.log.head

    # -- registry --------------------------------------------------------------

    def register(self, body: Any, role: Role = Role.ADMIN) -> Instance:
        """Register (or re-register) the instance in `body`, leased to its `lease_secret`.

        Below admin, `lease_secret` is required and an id that a live lease holds with
        another secret is refused (409); the same secret registers again (a control-plane
        restart, a lost lease). An admin may replace any registration."""
        instance = parse_instance(body, registered_at=self._wall_clock())
        secret = _secret(body, "lease_secret", required=role < Role.ADMIN)
        _secret(body, "notice_key", required=False)
        now = self._clock()
        held = self.leases.live_holder(instance.id, now)
        if held is not None and role < Role.ADMIN and not self.leases.held_by(instance.id, secret):
            raise RequestError(
                409,
                f"instance id {instance.id!r} is held by another lease: register under another id, or with that lease's secret",
                field="id",
            )
        self.leases.grant(instance.id, now, secret or held or "")
        if instance.service not in self._services:
            self.storage.add_service(instance.service)
            self._services.add(instance.service)
        self._instances[instance.id] = instance
        self._record("instance", {"op": "put", "instance": instance.to_dict()})
        return instance

    def heartbeat(self, instance_id: str, role: Role = Role.ADMIN, lease: str = "") -> None:
        """Renew the lease; below admin, `lease` must be its secret."""
        if instance_id not in self._instances or instance_id not in self.leases:
            raise RequestError(404, f"instance {instance_id!r} is not registered (its lease may have expired): register it again")
        self._check_lease(instance_id, role, lease)
        self.leases.renew(instance_id, self._clock())

    def set_state(self, instance_id: str, body: Any, role: Role = Role.ADMIN, lease: str = "") -> Instance:
        current = self._instance(instance_id)
        self._check_lease(instance_id, role, lease)
        if not isinstance(body, Mapping) or "state" not in body:
            raise RequestError(422, "body must be an object with a 'state'", field="state")
        try:
            state = InstanceState(body["state"])
        except (ValueError, TypeError):
            known = ", ".join(s.value for s in InstanceState)
            raise RequestError(422, f"unknown state {body['state']!r} (known: {known})", field="state") from None
        if not can_transition(current.state, state):
            raise RequestError(409, f"instance {instance_id!r} cannot go from {current.state} to {state}", field="state")
        if state == current.state:
            return current
        updated = Instance.from_dict({**current.to_dict(), "state": state})
        self._instances[instance_id] = updated
        self._record("instance", {"op": "put", "instance": updated.to_dict()})
        return updated

    def deregister(self, instance_id: str, role: Role = Role.ADMIN, lease: str = "") -> None:
        instance = self._instance(instance_id)
        self._check_lease(instance_id, role, lease)
        self._remove(instance)

    def reap(self) -> list[str]:
        """Remove every instance whose lease expired; returns their ids."""
        expired = self.leases.expired(self._clock())
        for instance_id in expired:
            instance = self._instances.get(instance_id)
            if instance is None:
                self.leases.revoke(instance_id)
            else:
                self._remove(instance)
        return expired

    def services(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {name: 0 for name in self._services}
        tags: dict[str, set[str]] = {name: set() for name in self._services}
        for instance in self._instances.values():
            counts[instance.service] = counts.get(instance.service, 0) + 1
            tags.setdefault(instance.service, set()).add(instance.tag)
        return [{"name": name, "instances": counts[name], "tags": sorted(tags[name])} for name in sorted(counts)]

    def instances(self, service: str | None = None) -> list[Instance]:
        return [i for i in self._instances.values() if service is None or i.service == service]

    # -- rules -------------------------------------------------------------------

    def apply_rules(self, documents: list[Any]) -> list[dict[str, Any]]:
        """Validate every document, then write those that changed, all or nothing.

        A document identical to the one in force is not written again: it keeps
        its revision and comes back marked `"unchanged": true`."""
        keyed: list[tuple[RuleKey, Mapping[str, Any]]] = []
        seen: set[RuleKey] = set()
        for document in documents:
            validate(document)
            key = document_key(document)
            if key in seen:
                raise RuleError("appears twice in one request", document=f"{key[1]}/{key[2]}", field="metadata.name")
            seen.add(key)
            keyed.append((key, _normalized(document, key)))
        results: dict[RuleKey, dict[str, Any]] = {}
        to_write: list[tuple[RuleKey, Mapping[str, Any]]] = []
        for key, document in keyed:
            current = self.storage.rule(key)
            if current is not None and current.document == document:
                results[key] = {**current.to_dict(), "unchanged": True}
            else:
                to_write.append((key, document))
        if to_write:
            for rule in self.storage.put_rules(to_write):
                self._record("rule", {"op": "put", "rule": rule.to_dict()}, rule.revision)
                results[rule.key] = rule.to_dict()
        return [results[key] for key, _ in keyed]

    def rules(self, namespace: str | None = None, kind: str | None = None) -> list[StoredRule]:
        return [
            rule
            for rule in self.storage.rules()
            if (namespace is None or rule.namespace == namespace) and (kind is None or rule.kind == kind)
        ]

    def rule(self, key: RuleKey) -> StoredRule:
        rule = self.storage.rule(key)
        if rule is None:
            raise RequestError(404, f"no rule {'/'.join(key)} in force")
        return rule

    def history(self, key: RuleKey) -> list[RuleRevision]:
        entries = self.storage.history(key)
        if not entries:
            raise RequestError(404, f"rule {'/'.join(key)} has no history")
        return entries

    def rollback(self, key: RuleKey, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping) or "revision" not in body:
            raise RequestError(422, "body must be an object with a 'revision'", field="revision")
        revision = body["revision"]
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise RequestError(422, "must be an integer revision", field="revision")
        for entry in self.storage.history(key):
            if entry.rule.revision == revision:
                if entry.op != "put":
                    raise RequestError(
                        409, f"revision {revision} deleted {'/'.join(key)}; roll back to a revision that wrote it", field="revision"
                    )
                return self.apply_rules([dict(entry.rule.document)])[0]
        raise RequestError(404, f"rule {'/'.join(key)} has no revision {revision}", field="revision")

    def delete_rule(self, key: RuleKey) -> StoredRule:
        try:
            rule = self.storage.delete_rule(key)
        except KeyError:
            raise RequestError(404, f"no rule {'/'.join(key)} in force") from None
        self._record("rule", {"op": "delete", "rule": rule.to_dict()}, rule.revision)
        return rule

    # -- events and watch ----------------------------------------------------------

    def post_event(self, body: Any) -> dict[str, Any]:
        """Keep an agent-reported event (a breaker opened, ...) for the console."""
        if not isinstance(body, Mapping):
            raise RequestError(422, "an event must be a JSON object")
        if not isinstance(body.get("type"), str) or not body["type"]:
            raise RequestError(422, "must be a non-empty string", field="type")
        if len(json.dumps(body)) > MAX_EVENT_BYTES:
            raise RequestError(422, f"an event must encode to at most {MAX_EVENT_BYTES} bytes of JSON")
        event = {**body, "revision": self.revision, "at": self._wall_clock()}
        self._recent.append(event)
        return event

    def recent_events(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self._recent))

    def snapshot(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "services": sorted(self._services),
            "instances": [i.to_dict() for i in self._instances.values()],
            "rules": [r.to_dict() for r in self.storage.rules()],
        }

    def watch(self, since: int | None) -> tuple[dict[str, Any] | None, list[Change], asyncio.Queue[bytes | None]]:
        """Subscribe a watcher: (snapshot or None, changes to replay, live queue).

        Done in one step on the loop thread, so nothing falls between the
        snapshot (or replay) and the first live change."""
        replay = self.log.since(since) if since is not None else None
        snapshot = self.snapshot() if replay is None else None
        return snapshot, replay or [], self.fanout.subscribe()

    # -- internals -------------------------------------------------------------------

    def _check_lease(self, instance_id: str, role: Role, lease: str) -> None:
        """Below admin, only the lease's holder may renew, change or end it."""
        if role >= Role.ADMIN:
            return
        if not lease:
            raise RequestError(
                403, f"instance {instance_id!r} is changed only with its lease: send header X-Tidegate-Lease: <lease_secret>"
            )
        if not self.leases.held_by(instance_id, lease):
            raise RequestError(
                403, f"X-Tidegate-Lease does not hold instance {instance_id!r}: only the agent that registered it may change it"
            )

    def _instance(self, instance_id: str) -> Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            raise RequestError(404, f"instance {instance_id!r} is not registered")
        return instance

    def _remove(self, instance: Instance) -> None:
        del self._instances[instance.id]
        self.leases.revoke(instance.id)
        self._record("instance", {"op": "delete", "instance": instance.to_dict()})

    def _record(self, event: str, data: dict[str, Any], revision: int | None = None) -> None:
        if revision is None:
            revision = self.storage.next_revision()
        change = self.log.append(revision, event, {"revision": revision, **data})
        self.fanout.publish(change.frame)


def _normalized(document: Mapping[str, Any], key: RuleKey) -> dict[str, Any]:
    """The document as it will be stored (JSON types), so equality means 'unchanged'.

    YAML dates become strings; infinities and NaN (YAML `.inf`, `.nan`) are
    refused, as JSON cannot carry them to the watchers."""
    try:
        return json.loads(json.dumps(document, sort_keys=True, default=str, allow_nan=False))
    except ValueError:
        raise RuleError("numbers must be finite (no .inf or .nan)", document=f"{key[1]}/{key[2]}") from None


def parse_instance(body: Any, registered_at: float) -> Instance:
    """An Instance from a registration body; RequestError(422) names a bad field.

    `registered_at` is now, unless the body claims an earlier registration."""
    if not isinstance(body, Mapping):
        raise RequestError(422, "an instance must be a JSON object")
    for name in ("service", "host"):
        if name not in body:
            raise RequestError(422, "is required", field=name)
        if not isinstance(body[name], str) or not body[name].strip():
            raise RequestError(422, "must be a non-empty string", field=name)
    _check_int(body, "port", required=True, low=1, high=65535)
    _check_int(body, "weight", low=0, high=1_000_000)
    _check_int(body, "admin_port", low=1, high=65535)
    for name in ("tag", "id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RequestError(422, "must be a string", field=name)
    started_at = body.get("started_at", 0.0)
    if isinstance(started_at, bool) or not isinstance(started_at, (int, float)) or not math.isfinite(started_at):
        raise RequestError(422, "must be a number (seconds since the epoch)", field="started_at")
    if "state" in body:
        try:
            InstanceState(body["state"])
        except (ValueError, TypeError):
            known = ", ".join(s.value for s in InstanceState)
            raise RequestError(422, f"unknown state {body['state']!r} (known: {known})", field="state") from None
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise RequestError(422, "must be an object of string values", field="metadata")
    # An instance registering again after the control plane lost it (a restart)
    # may say when it first registered, so consumers do not restart its warm-up.
    claimed = body.get("registered_at")
    if claimed is not None:
        if isinstance(claimed, bool) or not isinstance(claimed, (int, float)) or not math.isfinite(claimed):
            raise RequestError(422, "must be a number (seconds since the epoch)", field="registered_at")
        if 0 < claimed <= registered_at:
            registered_at = float(claimed)
    instance_id = (body.get("id") or "").strip() or f"{body['service']}@{body['host']}:{body['port']}"
    return Instance.from_dict({**body, "id": instance_id, "registered_at": registered_at})


def _secret(body: Any, name: str, required: bool) -> str:
    """A registration's `lease_secret` or `notice_key` ("" when absent and not required)."""
    value = body.get(name) if isinstance(body, Mapping) else None
    if value is None or value == "":
        if required:
            raise RequestError(
                422, f"is required: the agent's secret for this instance ({SECRET_LENGTHS[0]}+ url-safe characters)", field=name
            )
        return ""
    if not isinstance(value, str) or not SECRET_LENGTHS[0] <= len(value) <= SECRET_LENGTHS[1] or not _SECRET.fullmatch(value):
        raise RequestError(
            422, f"must be a string of {SECRET_LENGTHS[0]} to {SECRET_LENGTHS[1]} url-safe characters (A-Z a-z 0-9 - _)", field=name
        )
    return value


def _check_int(body: Mapping[str, Any], name: str, low: int, high: int, required: bool = False) -> None:
    if name not in body or body[name] is None:
        if required:
            raise RequestError(422, "is required", field=name)
        return
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(422, f"must be an integer from {low} to {high}", field=name)
