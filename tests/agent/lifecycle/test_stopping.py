"""Shutdown while a registration is in flight: the instance never stays registered behind a stopped server.

`stopping` waits (bounded) for the registration thread, then deregisters what is
registered. When the control plane is slow, the wait can end with a
registration still in flight; the instance it registers must not stay in the
registry (consumers would route to a stopped server until its lease expired).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from socket import socket

import pytest

import tidegate.agent.lifecycle as lifecycle_module
from tests.agent.lifecycle.test_reregistration import FakeRegistry, _lifecycle
from tests.support.procs import wait_until
from tidegate.core.instance import Instance


class SlowRegistry(FakeRegistry):
    """Registration answers only once `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.registering = threading.Event()
        self.release = threading.Event()
        self.deregistered: list[str] = []

    def register(self, instance: Instance, lease_secret: str = "") -> Instance:
        self.registering.set()
        self.release.wait(timeout=30)
        return super().register(instance, lease_secret)

    def deregister(self, instance_id: str, lease: str = "") -> None:
        self.deregistered.append(instance_id)
        super().deregister(instance_id, lease)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_a_registration_that_lands_after_stopping_gave_up_waiting_is_deregistered(listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle_module, "DEREGISTER_TIMEOUT_S", 0.2)
    registry = SlowRegistry()
    owner = _lifecycle(registry, heartbeat_s=3600)
    owner.listening([("127.0.0.1", listener)])
    assert registry.registering.wait(timeout=30)
    thread = owner._thread
    owner.stopping()  # the join gives up: the registration is still in flight
    assert thread is not None and thread.is_alive()
    registry.release.set()  # ... and now it lands
    thread.join(timeout=30)
    assert registry.known == {}
    assert [i.id for i in registry.registrations] == registry.deregistered


def test_stopping_after_the_registration_deregisters_once(listener: int) -> None:
    registry = SlowRegistry()
    registry.release.set()
    owner = _lifecycle(registry, heartbeat_s=3600)
    owner.listening([("127.0.0.1", listener)])
    wait_until(lambda: owner.registered, what="the registration")
    owner.stopping()
    assert registry.known == {} and len(registry.deregistered) == 1
