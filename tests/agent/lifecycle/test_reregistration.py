"""Registering again (the control plane restarted, or forgot a lease): at once, and where the warm-up was.

The lifecycle runs in this process against a fake control-plane client that
behaves like the registry: it stamps `registered_at` on a new instance and
keeps the one an instance sends back, and it forgets every instance when it
"restarts" (a new epoch).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

import tidegate.agent.lifecycle as lifecycle_module
from tests.support.procs import free_port, wait_until
from tidegate.agent.config import AgentConfig
from tidegate.agent.lifecycle import InstanceLifecycle
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance, InstanceState
from tidegate.errors import ControlPlaneError


class FakeRegistry:
    """The ControlClient calls the lifecycle makes, over an in-memory registry."""

    def __init__(self) -> None:
        self.down = False  # refuses every call, as an unreachable control plane does
        self.calls = 0
        self.epoch = "e1"
        self.now = 1_700_000_000.0
        self.known: dict[str, Instance] = {}
        self.registrations: list[Instance] = []  # what the agent sent, in order
        self.leases: list[str] = []  # the lease secret each registration was sent with
        self.lock = threading.Lock()

    def restart(self, epoch: str) -> None:
        with self.lock:
            self.epoch = epoch
            self.known.clear()
            self.now += 60

    def health(self) -> dict[str, object]:
        self.calls += 1
        if self.down:
            raise ControlPlaneError("control plane at http://fake unreachable")
        return {"status": "ok", "instance_ttl": 15.0, "epoch": self.epoch}

    def register(self, instance: Instance, lease_secret: str = "") -> Instance:
        with self.lock:
            self.registrations.append(instance)
            self.leases.append(lease_secret)
            claimed = instance.registered_at
            stored = Instance.from_dict({**instance.to_dict(), "registered_at": claimed if 0 < claimed <= self.now else self.now})
            self.known[stored.id] = stored
            return stored

    def heartbeat(self, instance_id: str, lease: str = "") -> bool:
        with self.lock:
            return instance_id in self.known

    def deregister(self, instance_id: str, lease: str = "") -> None:
        with self.lock:
            self.known.pop(instance_id, None)


@pytest.fixture
def listener() -> Iterator[int]:
    """A socket that accepts connections, standing in for the server's listener."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _lifecycle(registry: FakeRegistry, heartbeat_s: float) -> InstanceLifecycle:
    # The control plane URL points nowhere: the lifecycle's own watch never connects, so the
    # test says when a new epoch is seen (`_on_epoch`, what the watch calls on its thread).
    config = AgentConfig(service="orders", control=f"http://127.0.0.1:{free_port()}", heartbeat_interval=heartbeat_s)
    return InstanceLifecycle(AgentRuntime(config=config), client_factory=lambda: registry)  # type: ignore[arg-type,return-value]


def test_a_new_epoch_registers_every_instance_again_at_once_keeping_its_registration_time(listener: int) -> None:
    registry = FakeRegistry()
    lifecycle = _lifecycle(registry, heartbeat_s=3600)  # the next heartbeat is an hour away
    lifecycle.listening([("127.0.0.1", listener)])
    try:
        wait_until(lambda: lifecycle.registered, what="the first registration")
        [first] = registry.registrations
        assert first.registered_at == 0.0  # new: the registry stamps it
        stamped = registry.known[first.id].registered_at
        lifecycle._on_epoch("e1")  # the epoch it registered in: nothing to do
        registry.restart("e2")
        lifecycle._on_epoch("e2")
        wait_until(lambda: len(registry.registrations) == 2, timeout=10, what="the registration again, before any heartbeat")
        again = registry.registrations[1]
        assert again.id == first.id and again.state == InstanceState.SERVING
        assert again.registered_at == stamped  # consumers go on with its warm-up where it was
        assert registry.known[first.id].registered_at == stamped
        assert registry.leases[1] == registry.leases[0] != ""  # the same lease: the id stays this instance's
        lifecycle._on_epoch("e2")  # seen again (a reconnect to the same plane): no third registration
        assert len(registry.registrations) == 2
    finally:
        lifecycle.stopping()
    assert registry.known == {}


def test_an_instance_the_control_plane_forgot_registers_again_with_its_registration_time(listener: int) -> None:
    registry = FakeRegistry()
    lifecycle = _lifecycle(registry, heartbeat_s=0.05)
    lifecycle.listening([("127.0.0.1", listener)])
    try:
        wait_until(lambda: lifecycle.registered, what="the first registration")
        instance_id = registry.registrations[0].id
        stamped = registry.known[instance_id].registered_at
        with registry.lock:
            registry.known.clear()  # its lease expired (a long pause), same control plane
            registry.now += 60
        wait_until(lambda: instance_id in registry.known, timeout=10, what="the heartbeat's 404 to register it again")
        assert registry.registrations[-1].registered_at == stamped
        assert registry.known[instance_id].registered_at == stamped
    finally:
        lifecycle.stopping()


def test_a_new_epoch_before_the_first_registration_or_in_a_worker_registers_nothing(listener: int) -> None:
    registry = FakeRegistry()
    worker = _lifecycle(registry, heartbeat_s=3600)
    worker._on_epoch("e2")  # a worker process owns no instance
    assert registry.registrations == []
    owner = _lifecycle(registry, heartbeat_s=3600)
    owner._capabilities.may_register = lambda: False  # type: ignore[method-assign]  # still starting up
    owner.listening([("127.0.0.1", listener)])
    try:
        owner._on_epoch("e2")
        assert not owner._stop.wait(0.3)
        assert registry.registrations == [] and owner.state == InstanceState.STARTING
    finally:
        owner.stopping()


def test_a_snapshot_ends_the_backoff_of_a_registration_the_control_plane_refused(listener: int, monkeypatch) -> None:
    monkeypatch.setattr(lifecycle_module, "FIRST_BACKOFF_S", 3600.0)  # after one refusal, the next try is an hour away
    registry = FakeRegistry()
    registry.down = True
    lifecycle = _lifecycle(registry, heartbeat_s=3600)
    lifecycle.listening([("127.0.0.1", listener)])
    try:
        wait_until(lambda: registry.calls == 1, what="the first, refused, try")
        registry.down = False
        lifecycle._on_epoch("e1")  # its watch got a snapshot: the control plane answers again
        wait_until(lambda: lifecycle.registered, timeout=10, what="the registration, now")
        assert [i.registered_at for i in registry.registrations] == [0.0]
    finally:
        lifecycle.stopping()
