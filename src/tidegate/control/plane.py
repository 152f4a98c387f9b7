"""The control plane's state and every operation on it, without HTTP.

Registry (instances, leased by heartbeat, in memory), rule store (persisted,
every write a new revision), the change log and the push to watchers. The
registry does not outlive the process, so each start is a new `epoch` (a
random id, in `/v1/health` and in every watch snapshot): agents that see a new
one register again at once, and consumers hold their last-known instances
over a grace window meanwhile (`tidegate.core.directory`). Every
method runs on the server's event loop thread, one at a time, so a snapshot
and the subscription that follows it see the same revision. What clients can
make it hold is bounded (`tidegate.control.limits`), and every name an
instance carries follows the grammar of `tidegate.core.names`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.control.eventlog import Change, EventLog
from tidegate.control.fanout import Fanout, Subscriber
from tidegate.control.leases import Leases
from tidegate.control.limits import DEFAULT_LIMITS, FLAGS, MAX_EVENT_BYTES, MAX_METADATA_BYTES, RECENT_EVENTS, Limits
from tidegate.control.snapshots import EncodedSnapshot, Snapshots
from tidegate.control.storage import RuleRevision, Storage
from tidegate.control.tokens import Role
from tidegate.core import names
from tidegate.core.instance import ASK_OFFLINE, ASK_ONLINE, Ask, Instance, InstanceState, can_transition, lease_fingerprint
from tidegate.core.rulebook import RuleKey, StoredRule
from tidegate.errors import RuleError
from tidegate.rules import consistency, document_key, limits, validate
from tidegate.rules.faulttolerance import RULE_KIND, STRATEGY_KINDS
from tidegate.rules.rollout import KIND as ROLLOUT_KIND
from tidegate.rules.stability import Problem

#: How far before an instance's `started_at` a `registered_at` it claims may lie (clocks of two hosts differ).
MAX_CLOCK_SKEW_S = 300.0
#: A registration's `lease_secret` and `notice_key`: url-safe text of these lengths
#: (`secrets.token_urlsafe(32)` makes 43 characters).
SECRET_LENGTHS = (16, 256)
_SECRET = re.compile(r"[A-Za-z0-9_-]+")


class RequestError(Exception):
    """A request the control plane refuses; `status` is the HTTP status to answer,
    `limit` the bound it hit (a name of `tidegate.control.limits.Limits`), if any."""

    def __init__(self, status: int, message: str, field: str = "", limit: str = "", extra: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        self.limit = limit
        self.extra = dict(extra or {})
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        if self.limit:
            body["limit"] = self.limit
        body.update(self.extra)
        return body


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a new watcher is sent: a snapshot (or None when it resumes), the changes
    after it (or after the watcher's revision) from the log, then its live backlog."""

    snapshot: EncodedSnapshot | None
    replay: list[Change]
    subscriber: Subscriber


class ControlPlane:
    """Registry + rule store + change stream, over a `Storage`."""

    def __init__(
        self,
        storage: Storage,
        instance_ttl: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log_capacity: int = 10_000,
        limits: Limits = DEFAULT_LIMITS,
        epoch: str | None = None,
    ) -> None:
        self.storage = storage
        self.limits = limits
        #: This process's registry: a new one at every start (nothing of it is persisted).
        self.epoch = epoch or secrets.token_hex(8)
        self.leases = Leases(instance_ttl)
        self.fanout = Fanout(limits.watcher_backlog_bytes)
        self.watchers = 0  # open watch streams, subscribed or waiting for their snapshot
        self._clock = clock
        self._wall_clock = wall_clock
        self._instances: dict[str, Instance] = {}
        self._services = set(storage.services())
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        # Instances did not survive the restart, and that loss is no replayable
        # change: a new revision makes every watcher from before take a snapshot.
        self.log = EventLog(floor=storage.next_revision(), capacity=log_capacity)
        self.snapshots = Snapshots(self.snapshot, self.log)

    @property
    def revision(self) -> int:
        return self.log.head

    # -- registry --------------------------------------------------------------

    def register(self, body: Any, role: Role = Role.ADMIN) -> Instance:
        """Register (or re-register) the instance in `body`, leased to its `lease_secret`.

        Below admin, `lease_secret` is required and an id that a live lease holds with
        another secret is refused (409); the same secret registers again (a control-plane
        restart, a lost lease). An admin may replace any registration. A new id past
        `max_instances`, or a new service past `max_services`, is refused (429)."""
        instance = parse_instance(body, registered_at=self._wall_clock(), max_metadata_bytes=self.limits.max_metadata_bytes)
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
        if instance.id not in self._instances and len(self._instances) >= self.limits.max_instances:
            raise _full("max_instances", f"the registry holds {len(self._instances)} instances, its limit")
        if instance.service not in self._services and len(self._services) >= self.limits.max_services:
            raise _full("max_services", f"the control plane remembers {len(self._services)} service names, its limit")
        self.leases.grant(instance.id, now, secret or held or "")
        if instance.service not in self._services:
            self.storage.add_service(instance.service)
            self._services.add(instance.service)
        instance = self._keep_ask(instance)
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
        """Change an instance's state. An agent tells its own (with its lease); an admin without a
        lease *asks* the instance's agent too: DRAINING asks it to go offline (its lossless drain,
        the process stays up), SERVING or WARMING to come online again. The ask is recorded in the
        instance record, so the agent hears it over its own watch: no secret goes to the agent."""
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
        ask = current.ask
        if role >= Role.ADMIN and not lease and state != InstanceState.STOPPED:
            want = ASK_OFFLINE if state == InstanceState.DRAINING else ASK_ONLINE
            if state != current.state or ask is None or ask.want != want:  # asked again, unchanged: no new ask
                ask = Ask(want, secrets.token_hex(8), lease_fingerprint(self.leases.secret(instance_id) or ""))
        if state == current.state and ask == current.ask:
            return current
        updated = dataclasses.replace(current, state=state, ask=ask)
        self._instances[instance_id] = updated
        self._record("instance", {"op": "put", "instance": updated.to_dict()})
        return updated

    def _keep_ask(self, instance: Instance) -> Instance:
        """A registration names no ask (parse_instance drops one): the ask of the record it replaces
        stays when the lease is the same, so a re-registration racing an ask does not cancel it."""
        current = self._instances.get(instance.id)
        ask = current.ask if current is not None else None
        if ask is None or ask.lease != lease_fingerprint(self.leases.secret(instance.id) or ""):
            return instance
        return dataclasses.replace(instance, ask=ask)

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

    def instance(self, instance_id: str) -> Instance | None:
        """The registered instance of that id (one lookup: a metrics push asks for it on every push)."""
        return self._instances.get(instance_id)

    # -- rules -------------------------------------------------------------------

    def apply_rules(self, documents: list[Any]) -> list[dict[str, Any]]:
        """Validate every document, then write those that changed, all or nothing.

        A document identical to the one in force is not written again: it keeps
        its revision and comes back marked `"unchanged": true`."""
        keyed: list[tuple[RuleKey, Mapping[str, Any]]] = []
        seen: set[RuleKey] = set()
        warnings: dict[RuleKey, list[str]] = {}
        for document in documents:
            typed = validate(document)
            if isinstance(document, Mapping) and document.get("kind") == ROLLOUT_KIND:
                # a rollout is a process the runner drives, not a rule agents apply: stored here it would do nothing
                raise RuleError(
                    "a Rollout is started with POST /v1/rollouts (`tidegate rollout start -f FILE`), not applied as a rule",
                    document=f"{ROLLOUT_KIND}/{document['metadata']['name']}",
                    field="kind",
                )
            key = document_key(document)
            found = [*getattr(typed, "warnings", ()), *self._app_warnings(typed, key)]
            if found:
                warnings[key] = found
            if key in seen:
                raise RuleError("appears twice in one request", document=f"{key[1]}/{key[2]}", field="metadata.name")
            seen.add(key)
            keyed.append((key, _normalized(document, key)))
        results: dict[RuleKey, dict[str, Any]] = {}
        to_write: list[tuple[RuleKey, Mapping[str, Any]]] = []
        added = 0
        for key, document in keyed:
            current = self.storage.rule(key)
            if current is not None and current.document == document:
                results[key] = {**current.to_dict(), "unchanged": True}
            else:
                to_write.append((key, document))
                added += current is None
        if added and len(self.storage.rules()) + added > limits.MAX_DOCUMENTS_IN_FORCE:
            raise RequestError(413, f"the store holds at most {limits.MAX_DOCUMENTS_IN_FORCE} rule documents; delete some first")
        conflicts = self._new_reference_problems(dict(to_write))
        if conflicts:
            raise RequestError(
                409,
                "; ".join(f"{_label(key)} field {error.field!r}: {error.reason}" for key, error in conflicts)
                + " (a rule's strategies go in the same request or before it; one ServiceSettings per service; one service's canaries share a sticky key and at most 100%)",
                field=conflicts[0][1].field,
                extra={"document": _label(conflicts[0][0]), "referrers": [_referrer(key, error) for key, error in conflicts]},
            )
        if to_write:
            written = self.storage.put_rules(to_write)
            for index, rule in enumerate(written):
                # On etcd one apply is one transaction at one revision: every frame of it but the
                # last says "more", so a watcher cut off inside it resumes before that revision.
                joins = index > 0 and written[index - 1].revision == rule.revision
                more = index + 1 < len(written) and written[index + 1].revision == rule.revision
                self._record("rule", {"op": "put", "rule": rule.to_dict(), **({"more": True} if more else {})}, rule.revision, joins)
                results[rule.key] = rule.to_dict()
                if rule.key in warnings:  # reported where the console shows what agents post
                    self.post_event(
                        {
                            "type": "rule-warning",
                            "namespace": rule.namespace,
                            "document": f"{rule.kind}/{rule.name}",
                            "warnings": warnings[rule.key],
                        }
                    )
        for key, found in warnings.items():
            results[key]["warnings"] = found
        return [results[key] for key, _ in keyed]

    def _app_warnings(self, typed: Any, key: RuleKey) -> list[str]:
        """A scope naming an app no instance has ever registered as: likely a typo, inert until one does."""
        app = getattr(typed, "app", "")
        apps = {app} if isinstance(app, str) and app else set()
        for rule in getattr(typed, "rules", ()):
            apps |= set(getattr(rule, "services", ()))
        unknown = sorted(apps - self._services)
        return [
            f"{key[1]}/{key[2]}: app {app!r} is no service that has registered here (yet); the rule acts only on a service of that name"
            for app in unknown
        ]

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

    def delete_rule(self, key: RuleKey, cascade: bool = False) -> StoredRule:
        """Delete one rule (404 when not in force); refused (409, naming them) while other rules still
        use it, unless `cascade` deletes them too (`delete_rules` says which)."""
        if self.storage.rule(key) is None:
            raise RequestError(404, f"no rule {'/'.join(key)} in force")
        deleted, _missing = self.delete_rules([key], cascade)
        return next(rule for rule in deleted if rule.key == key)

    def delete_rules(self, keys: list[RuleKey], cascade: bool = False) -> tuple[list[StoredRule], list[RuleKey]]:
        """Delete the rules in force among `keys`, referrers before what they name, each its own revision:
        (deleted, keys not in force). A delete that leaves another rule naming a strategy that is gone
        is refused (409 naming the referrers), unless `cascade` deletes those referrers too."""
        wanted = list(dict.fromkeys(keys))
        present = [key for key in wanted if self.storage.rule(key) is not None]
        missing = [key for key in wanted if key not in present]
        removing = dict.fromkeys(present)
        conflicts = self._new_reference_problems(dict.fromkeys(removing))
        if conflicts and not cascade:
            names = ", ".join(sorted({_label(key) for key, _ in conflicts}))
            raise RequestError(
                409,
                f"still in use by {names}: "
                + "; ".join(f"{_label(key)} field {error.field!r}: {error.reason}" for key, error in conflicts)
                + " (delete or change the referrers first, or delete them too with cascade)",
                field=conflicts[0][1].field,
                extra={"document": _label(conflicts[0][0]), "referrers": [_referrer(key, error) for key, error in conflicts]},
            )
        for key, _error in conflicts:
            removing[key] = None
        # Referrers first: an agent never sees a rule naming a strategy already gone.
        order = sorted(removing, key=lambda key: key[1] in STRATEGY_KINDS)
        deleted = []
        for key in order:
            rule = self.storage.delete_rule(key)
            self._record("rule", {"op": "delete", "rule": rule.to_dict()}, rule.revision)
            deleted.append(rule)
        return deleted, missing

    def _new_reference_problems(self, change: Mapping[RuleKey, Mapping[str, Any] | None]) -> list[Problem]:
        """The unresolved strategy references `change` (key -> new document, or None: deleted) would add."""
        references = (RULE_KIND, *STRATEGY_KINDS)  # resolved within a namespace
        relevant = {key: document for key, document in change.items() if key[1] in references or key[1] in consistency.KINDS}
        if not relevant:
            return []
        namespaces = {key[0] for key in relevant if key[1] in references}
        across = any(key[1] in consistency.KINDS for key in relevant)  # one service's settings and canaries, in any namespace
        current = {
            rule.key: rule.document
            for rule in self.storage.rules()
            if (rule.kind in references and rule.namespace in namespaces) or (across and rule.kind in consistency.KINDS)
        }
        after = dict(current)
        for key, document in relevant.items():
            if document is None:
                after.pop(key, None)
            else:
                after[key] = document
        before = {(key, error.field) for key, error in consistency.set_problems(current.values())}
        return [(key, error) for key, error in consistency.set_problems(after.values()) if (key, error.field) not in before]

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
        """The state at this revision; `instances` holds the `Instance` objects themselves
        (immutable): `tidegate.control.snapshots` encodes them off the event loop."""
        return {
            "revision": self.revision,
            "epoch": self.epoch,
            "instance_ttl": self.leases.ttl,  # consumers hold instances of an earlier epoch over this long
            "services": sorted(self._services),
            "instances": list(self._instances.values()),
            "rules": [r.to_dict() for r in self.storage.rules()],
        }

    def open_watch(self) -> None:
        """Take a watcher's place; RequestError(429) when every place is taken.
        `close_watch` gives it back when the stream ends."""
        if self.watchers >= self.limits.max_watchers:
            raise _full("max_watchers", f"{self.watchers} watch streams are open, the limit")
        self.watchers += 1

    def close_watch(self) -> None:
        self.watchers = max(0, self.watchers - 1)

    async def watch(self, since: int | None) -> Subscription:
        """Subscribe a watcher: the changes after `since` from the log when it still
        holds them, else the newest shared snapshot and the changes after it.

        The log is read and the subscription made in one step on the loop
        thread, so nothing falls between them and the first live change."""
        replay = self.log.since(since) if since is not None else None
        if replay is not None:
            return Subscription(None, replay, self.fanout.subscribe())
        while True:
            snapshot = await self.snapshots.get()
            replay = self.log.since(snapshot.revision)
            if replay is not None:  # else: more changes than the log keeps came during the build
                return Subscription(snapshot, replay, self.fanout.subscribe())

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

    def _record(self, event: str, data: dict[str, Any], revision: int | None = None, joins: bool = False) -> None:
        if revision is None:
            revision = self.storage.next_revision()
        change = self.log.append(revision, event, {"revision": revision, **data}, joins)
        self.fanout.publish(change.frame)


def _label(key: RuleKey) -> str:
    return f"{key[1]}/{key[2]} (namespace {key[0]})"


def _referrer(key: RuleKey, error: RuleError) -> dict[str, Any]:
    return {"namespace": key[0], "kind": key[1], "name": key[2], "field": error.field, "reason": error.reason}


def _normalized(document: Mapping[str, Any], key: RuleKey) -> dict[str, Any]:
    """The document as it will be stored (JSON types), so equality means 'unchanged'.

    YAML dates become strings; infinities and NaN (YAML `.inf`, `.nan`) are
    refused, as JSON cannot carry them to the watchers."""
    try:
        return json.loads(json.dumps(document, sort_keys=True, default=str, allow_nan=False))
    except ValueError:
        raise RuleError("numbers must be finite (no .inf or .nan)", document=f"{key[1]}/{key[2]}") from None


def parse_instance(body: Any, registered_at: float, max_metadata_bytes: int = MAX_METADATA_BYTES) -> Instance:
    """An Instance from a registration body; RequestError(422) names a bad field,
    RequestError(413) metadata over `max_metadata_bytes`.

    `registered_at` is now, unless the body claims an earlier registration."""
    if not isinstance(body, Mapping):
        raise RequestError(422, "an instance must be a JSON object")
    for name in ("service", "host"):
        if name not in body:
            raise RequestError(422, "is required", field=name)
        if not isinstance(body[name], str) or not body[name].strip():
            raise RequestError(422, "must be a non-empty string", field=name)
    _check_name(body, "service", names.is_service_name, names.SERVICE_NAME_RULE)
    _check_name(body, "host", names.is_host, names.HOST_RULE)
    _check_int(body, "port", required=True, low=1, high=65535)
    _check_int(body, "weight", low=0, high=1_000_000)
    _check_int(body, "admin_port", low=1, high=65535)
    for name in ("tag", "id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RequestError(422, "must be a string", field=name)
    if body.get("tag"):
        _check_name(body, "tag", names.is_tag, names.TAG_RULE)
    if (body.get("id") or "").strip():
        _check_name(body, "id", names.is_instance_id, names.INSTANCE_ID_RULE)
    started_at = body.get("started_at", 0.0)
    if isinstance(started_at, bool) or not isinstance(started_at, (int, float)) or not math.isfinite(started_at):
        raise RequestError(422, "must be a number (seconds since the epoch)", field="started_at")
    if "state" in body:
        try:
            InstanceState(body["state"])
        except (ValueError, TypeError):
            known = ", ".join(s.value for s in InstanceState)
            raise RequestError(422, f"unknown state {body['state']!r} (known: {known})", field="state") from None
    _check_metadata(body.get("metadata") or {}, max_metadata_bytes)
    # An instance registering again after the control plane lost it (a restart)
    # may say when it first registered, so consumers do not restart its warm-up.
    # The claim is kept when it is sane: not in the future (this clock), and not
    # before the instance's process started (less `MAX_CLOCK_SKEW_S`, as the two
    # times come from different hosts' clocks); otherwise the instance is
    # stamped now, as a new one is. The answer says which.
    claimed = body.get("registered_at")
    if claimed is not None:
        if isinstance(claimed, bool) or not isinstance(claimed, (int, float)) or not math.isfinite(claimed):
            raise RequestError(422, "must be a number (seconds since the epoch)", field="registered_at")
        if 0 < claimed <= registered_at and claimed >= started_at - MAX_CLOCK_SKEW_S:
            registered_at = float(claimed)
    instance_id = (body.get("id") or "").strip() or f"{body['service']}@{body['host']}:{body['port']}"
    if not names.is_instance_id(instance_id):  # the default id of a host too long for one
        raise RequestError(422, f"the instance id {instance_id!r} made of service, host and port is too long: give an 'id'", field="id")
    return Instance.from_dict({**body, "id": instance_id, "registered_at": registered_at, "ask": None})


def _check_name(body: Mapping[str, Any], field: str, valid: Callable[[str], bool], rule: str) -> None:
    value = body[field]
    if not valid(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise RequestError(422, f"{shown!r} is not valid: {rule}", field=field)


def _check_metadata(metadata: Any, max_bytes: int) -> None:
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise RequestError(422, "must be an object of string values", field="metadata")
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > max_bytes:
        flag = FLAGS["max_metadata_bytes"]
        raise RequestError(
            413,
            f"is {size} bytes of JSON, over the limit of {max_bytes} (max_metadata_bytes; `tidegate control {flag} N` raises it)",
            field="metadata",
            limit="max_metadata_bytes",
        )
    for key, value in metadata.items():
        if not names.is_metadata_key(key):
            raise RequestError(422, f"key {key[:80]!r} is not valid: {names.METADATA_KEY_RULE}", field="metadata")
        if names.has_control_characters(value):
            raise RequestError(422, f"the value of {key!r} holds control characters", field=f"metadata.{key}")


def _full(limit: str, what: str) -> RequestError:
    """429 for a count at its bound, naming the limit and the flag that moves it."""
    return RequestError(429, f"refused: {what} ({limit}; `tidegate control {FLAGS[limit]} N` raises it)", limit=limit)


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
