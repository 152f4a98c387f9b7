"""The agent's live view of the registry: instances per service, applied by revision.

Fed by the watch stream (a snapshot, then one event per change). Every event
carries the control plane's revision; an event at or below the revision already
applied is ignored, so replays after a reconnect never double-apply. Readers on
the request path get immutable tuples swapped in whole, so they never lock.

A control plane that restarts loses its registry (instances are leases, in
memory) and says so with a new `epoch`. Its first snapshot lists only the
instances that registered again so far, so the directory does not take it as
the truth at once: the instances it knew and the snapshot lacks are *held over*
for a grace window (about one lease, the time every live agent needs to
register again), routable as they were. Each is replaced as its registration
arrives; one that does not come back is removed by `expire` when the window
ends. Time is passed in (`now`), as everywhere in the core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tidegate.core.instance import Instance, InstanceState

Listener = Callable[[str], None]  # called with the service whose instances changed


class ServiceDirectory:
    """Instances of every service, as of `revision`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # writers only; readers take the swapped tuples
        self._revision = 0
        self._generation = 0  # bumped on every change, whatever its revision (see `generation`)
        self._instances: dict[str, dict[str, Instance]] = {}
        self._routable: dict[str, tuple[Instance, ...]] = {}
        self._services: frozenset[str] = frozenset()
        self._local_states: dict[str, InstanceState] = {}  # learned off the stream (e.g. a drain notice)
        self._listeners: list[Listener] = []
        self._epoch = ""  # the control plane's epoch the instances come from ("": not known yet)
        self._held: dict[str, float] = {}  # instance id -> end of its grace window (a `now` value)

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def generation(self) -> int:
        """A counter bumped on every change to the instances or their states, for readers that
        cache something derived from them: `revision` is not enough (an expired hold-over, a
        drain notice, or a snapshot at the same revision change instances and keep it)."""
        return self._generation

    @property
    def epoch(self) -> str:
        """The epoch of the control plane the directory follows ("" until a snapshot names one)."""
        return self._epoch

    def held_over(self) -> dict[str, float]:
        """Instances kept from a previous epoch, not registered again yet: id -> end of their window."""
        return dict(self._held)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- reads (request path) -------------------------------------------------

    def knows(self, service: str) -> bool:
        """True when `service` is a registered service name (even with no live instance)."""
        return service in self._services

    def services(self) -> frozenset[str]:
        return self._services

    def routable(self, service: str) -> tuple[Instance, ...]:
        """Instances that may take new requests now (WARMING or SERVING)."""
        return self._routable.get(service, ())

    def instances(self, service: str) -> tuple[Instance, ...]:
        """Every known instance of `service`, whatever its state."""
        return tuple(self._instances.get(service, {}).values())

    def find(self, instance_id: str) -> Instance | None:
        for by_id in self._instances.values():
            if instance_id in by_id:
                return by_id[instance_id]
        return None

    # -- writes (watch stream, notifications) -----------------------------------

    def replace(
        self,
        revision: int,
        instances: Iterable[Instance],
        services: Iterable[str] = (),
        *,
        epoch: str = "",
        now: float = 0.0,
        grace_s: float = 0.0,
    ) -> None:
        """Apply a full snapshot: everything not in it is gone, and its revision is the one
        in force (even a lower one: a control plane whose data was wiped starts over).

        `epoch` is the snapshot's control-plane epoch. When it differs from the one the
        directory followed (a restart) and `grace_s` > 0, the instances the snapshot lacks
        are held over until `now + grace_s` instead (see the module docstring); instances
        held over already get that window too (the new control plane is theirs to reach).
        A snapshot of the same epoch keeps those still held, each with its window."""
        fresh: dict[str, dict[str, Instance]] = {}
        for instance in instances:
            fresh.setdefault(instance.service, {})[instance.id] = instance
        with self._lock:
            listed = {i for by_id in fresh.values() for i in by_id}
            new_epoch = bool(epoch and self._epoch and epoch != self._epoch)
            if new_epoch:
                deadline = now + grace_s
                held = {i.id: deadline for by_id in self._instances.values() for i in by_id.values() if i.id not in listed and grace_s > 0}
            else:
                held = {i: deadline for i, deadline in self._held.items() if i not in listed}
            for by_id in self._instances.values():
                for instance in by_id.values():
                    if instance.id in held:
                        fresh.setdefault(instance.service, {})[instance.id] = instance
            changed = set(self._instances) | set(fresh)
            self._instances = fresh
            self._held = held
            self._services = frozenset(services) | frozenset(fresh)
            self._local_states = {k: v for k, v in self._local_states.items() if self._has(k)}
            self._revision = revision or self._revision
            self._epoch = epoch or self._epoch
            self._generation += 1
            for service in changed:
                self._refresh(service)
        self._notify(changed)

    def expire(self, now: float) -> float | None:
        """Remove the held-over instances whose grace window ended by `now`; returns when
        the next window ends (None: nothing is held over)."""
        if not self._held:
            return None
        changed: set[str] = set()
        with self._lock:
            for instance_id, deadline in list(self._held.items()):
                if deadline > now:
                    continue
                del self._held[instance_id]
                self._local_states.pop(instance_id, None)
                for service, by_id in self._instances.items():
                    if by_id.pop(instance_id, None) is not None:
                        changed.add(service)
            if changed:
                self._generation += 1
            for service in changed:
                self._refresh(service)
            following = min(self._held.values(), default=None)
        self._notify(changed)
        return following

    def put(self, revision: int, instance: Instance) -> bool:
        """Add or update one instance; False when the event is stale."""
        with self._lock:
            if revision and revision <= self._revision:
                return False
            self._revision = revision or self._revision
            if self._held:
                self._release_held(instance)
            self._instances.setdefault(instance.service, {})[instance.id] = instance
            self._local_states.pop(instance.id, None)
            self._services = self._services | {instance.service}
            self._generation += 1
            self._refresh(instance.service)
        self._notify({instance.service})
        return True

    def remove(self, revision: int, service: str, instance_id: str) -> bool:
        """Drop one instance; False when the event is stale."""
        with self._lock:
            if revision and revision <= self._revision:
                return False
            self._revision = revision or self._revision
            self._instances.get(service, {}).pop(instance_id, None)
            self._local_states.pop(instance_id, None)
            self._held.pop(instance_id, None)
            self._generation += 1
            self._refresh(service)
        self._notify({service})
        return True

    def mark(self, instance_id: str, state: InstanceState) -> bool:
        """Override an instance's state from a channel other than the stream
        (a direct drain notice, a response header). The next stream event for
        the instance replaces it. False when the instance is unknown."""
        with self._lock:
            instance = self._find_locked(instance_id)
            if instance is None:
                return False
            self._local_states[instance_id] = state
            self._generation += 1
            self._refresh(instance.service)
        self._notify({instance.service})
        return True

    def mark_address(self, host: str, port: int, state: InstanceState) -> bool:
        """Like `mark`, for a caller that knows only the address it called."""
        for by_id in list(self._instances.values()):
            for instance in list(by_id.values()):
                if instance.host == host and instance.port == port:
                    return self.mark(instance.id, state)
        return False

    # -- on-disk snapshot -----------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "revision": self._revision,
            "epoch": self._epoch,
            "services": sorted(self._services),
            "instances": [i.to_dict() for by_id in self._instances.values() for i in by_id.values()],
        }

    def load_snapshot(self, data: Mapping[str, Any]) -> None:
        """Apply a snapshot written by `to_snapshot` (or sent by the watch stream)."""
        instances = [Instance.from_dict(item) for item in data.get("instances", ())]
        self.replace(int(data.get("revision", 0)), instances, data.get("services", ()), epoch=str(data.get("epoch") or ""))

    # -- internals --------------------------------------------------------------

    def _release_held(self, instance: Instance) -> None:
        """`instance` registered again: it is no longer held over, nor is another id at its
        address (an agent that came back under a new id)."""
        self._held.pop(instance.id, None)
        by_id = self._instances.get(instance.service, {})
        for other in [i for i in by_id.values() if i.id in self._held and i.host == instance.host and i.port == instance.port]:
            del self._held[other.id]
            del by_id[other.id]
            self._local_states.pop(other.id, None)

    def _has(self, instance_id: str) -> bool:
        return self._find_locked(instance_id) is not None

    def _find_locked(self, instance_id: str) -> Instance | None:
        for by_id in self._instances.values():
            if instance_id in by_id:
                return by_id[instance_id]
        return None

    def _refresh(self, service: str) -> None:
        local = self._local_states
        self._routable[service] = tuple(i for i in self._instances.get(service, {}).values() if local.get(i.id, i.state).routable)

    def _notify(self, services: Iterable[str]) -> None:
        for service in services:
            for listener in self._listeners:
                listener(service)
