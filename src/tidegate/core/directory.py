"""The agent's live view of the registry: instances per service, applied by revision.

Fed by the watch stream (a snapshot, then one event per change). Every event
carries the control plane's revision; an event at or below the revision already
applied is ignored, so replays after a reconnect never double-apply. Readers on
the request path get immutable tuples swapped in whole, so they never lock.
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
        self._instances: dict[str, dict[str, Instance]] = {}
        self._routable: dict[str, tuple[Instance, ...]] = {}
        self._services: frozenset[str] = frozenset()
        self._local_states: dict[str, InstanceState] = {}  # learned off the stream (e.g. a drain notice)
        self._listeners: list[Listener] = []

    @property
    def revision(self) -> int:
        return self._revision

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

    def replace(self, revision: int, instances: Iterable[Instance], services: Iterable[str] = ()) -> None:
        """Apply a full snapshot: everything not in it is gone, and its revision is the one
        in force (even a lower one: a control plane whose data was wiped starts over)."""
        fresh: dict[str, dict[str, Instance]] = {}
        for instance in instances:
            fresh.setdefault(instance.service, {})[instance.id] = instance
        with self._lock:
            changed = set(self._instances) | set(fresh)
            self._instances = fresh
            self._services = frozenset(services) | frozenset(fresh)
            self._local_states = {k: v for k, v in self._local_states.items() if self._has(k)}
            self._revision = revision or self._revision
            for service in changed:
                self._refresh(service)
        self._notify(changed)

    def put(self, revision: int, instance: Instance) -> bool:
        """Add or update one instance; False when the event is stale."""
        with self._lock:
            if revision and revision <= self._revision:
                return False
            self._revision = revision or self._revision
            self._instances.setdefault(instance.service, {})[instance.id] = instance
            self._local_states.pop(instance.id, None)
            self._services = self._services | {instance.service}
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
            "services": sorted(self._services),
            "instances": [i.to_dict() for by_id in self._instances.values() for i in by_id.values()],
        }

    def load_snapshot(self, data: Mapping[str, Any]) -> None:
        """Apply a snapshot written by `to_snapshot` (or sent by the watch stream)."""
        instances = [Instance.from_dict(item) for item in data.get("instances", ())]
        self.replace(int(data.get("revision", 0)), instances, data.get("services", ()))

    # -- internals --------------------------------------------------------------

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
