"""Which asks of the control plane an agent acts on: its own instance's, under its own lease, once each.

The lifecycle runs in this process (as in test_reregistration.py) with a capability
that records what it is asked; the records the watch would apply are put in the
runtime's directory by hand, and `_check_asks` is what the watch calls after each.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.agent.lifecycle.test_reregistration import FakeRegistry, _lifecycle
from tests.support.procs import wait_until
from tidegate.agent.capability import Capability
from tidegate.agent.lifecycle import InstanceLifecycle
from tidegate.core.instance import ASK_OFFLINE, ASK_ONLINE, Ask, Instance, lease_fingerprint


class Recorder(Capability):
    def __init__(self) -> None:
        self.wants: list[str] = []
        self.lock = threading.Lock()

    def asked_count(self) -> int:
        with self.lock:
            return len(self.wants)

    def asked(self, want: str) -> bool:
        with self.lock:
            self.wants.append(want)
        return True


@pytest.fixture
def running() -> Iterator[tuple[InstanceLifecycle, Recorder]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        lifecycle = _lifecycle(FakeRegistry(), heartbeat_s=3600)
        recorder = lifecycle.runtime.add(Recorder())
        lifecycle.listening([("127.0.0.1", sock.getsockname()[1])])
        try:
            wait_until(lambda: lifecycle.registered, what="the registration")
            yield lifecycle, recorder
        finally:
            lifecycle.stopping()


def _seen(lifecycle: InstanceLifecycle, revision: int, instance: Instance, want: str, ask_id: str, lease: str) -> None:
    lifecycle.runtime.directory.put(revision, dataclasses.replace(instance, ask=Ask(want, ask_id, lease)))
    lifecycle._check_asks()


def test_only_an_ask_of_its_own_instance_and_lease_is_acted_on_and_each_once(running: tuple[InstanceLifecycle, Recorder]) -> None:
    lifecycle, recorder = running
    [own] = lifecycle.instances
    fingerprint = lease_fingerprint(lifecycle.lease_secret(own.id))
    other = dataclasses.replace(own, id="orders-someone-else", port=own.port + 1)
    _seen(lifecycle, 1, other, ASK_OFFLINE, "a1", fingerprint)  # another instance's record
    _seen(lifecycle, 2, own, ASK_OFFLINE, "a2", lease_fingerprint("another lease of this id"))
    lifecycle.runtime.directory.put(3, dataclasses.replace(own, ask=None))  # a snapshot of a new epoch: no ask
    lifecycle._check_asks()
    assert recorder.wants == []
    _seen(lifecycle, 4, own, ASK_OFFLINE, "a3", fingerprint)
    wait_until(lambda: recorder.asked_count() == 1, what="the offline ask acted on")
    _seen(lifecycle, 5, own, ASK_OFFLINE, "a3", fingerprint)  # the same ask again (a replay, a resync)
    _seen(lifecycle, 6, own, ASK_ONLINE, "a4", fingerprint)
    wait_until(lambda: recorder.asked_count() == 2, what="the online ask acted on")
    _seen(lifecycle, 7, own, "reboot", "a5", fingerprint)  # a want this agent does not know: told, refused by all
    wait_until(lambda: recorder.asked_count() == 3, what="the unknown ask passed on")
    assert recorder.wants == [ASK_OFFLINE, ASK_ONLINE, "reboot"]


def test_no_ask_is_acted_on_before_registration_or_in_a_worker() -> None:
    lifecycle = _lifecycle(FakeRegistry(), heartbeat_s=3600)
    recorder = lifecycle.runtime.add(Recorder())
    stale = Instance(id="orders-1", service="orders", host="127.0.0.1", port=1, ask=Ask(ASK_OFFLINE, "a1", ""))
    lifecycle.runtime.directory.put(1, stale)  # e.g. the on-disk snapshot, loaded before anything registered
    lifecycle._check_asks()
    assert recorder.wants == [] and not lifecycle.owner
