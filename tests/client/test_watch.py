"""The Watcher against a real control plane process."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.support.procs import free_port, wait_until
from tidegate.client.control import ControlClient
from tidegate.client.watch import RECONNECT_CAP, Watcher, retry_delay
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.rulebook import RuleBook

SETTINGS = {"apiVersion": "tidegate.io/v1", "kind": "ServiceSettings", "metadata": {"name": "orders"}, "spec": {"service": "orders"}}


def _watcher(url: str, **kwargs) -> tuple[Watcher, ServiceDirectory, RuleBook]:
    directory, rulebook = ServiceDirectory(), RuleBook()
    return Watcher(url, TOKEN, directory, rulebook, **kwargs), directory, rulebook


def test_a_watcher_sees_instances_arrive_change_and_leave(control: ControlProcess, client: ControlClient) -> None:
    changes = threading.Semaphore(0)
    watcher, directory, _ = _watcher(control.url, on_change=changes.release)
    watcher.start()
    try:
        assert watcher.wait_synced(20)
        assert watcher.connected
        instance = client.register(Instance(id="", service="orders", host="127.0.0.1", port=8001, tag="gray"))
        wait_until(lambda: directory.routable("orders"), timeout=20, what="the new instance")
        assert directory.find(instance.id).tag == "gray"
        client.set_state(instance.id, InstanceState.DRAINING)
        wait_until(lambda: not directory.routable("orders") and directory.instances("orders"), timeout=20, what="the drain")
        client.deregister(instance.id)
        wait_until(lambda: directory.instances("orders") == (), timeout=20, what="the instance to leave")
        assert directory.knows("orders")
        assert changes.acquire(timeout=1)
    finally:
        watcher.stop()
    assert not watcher.connected


def test_a_watcher_sees_an_expired_instance_leave(control: ControlProcess, client: ControlClient) -> None:
    watcher, directory, _ = _watcher(control.url)
    watcher.start()
    try:
        client.register(Instance(id="", service="orders", host="h", port=1))
        wait_until(lambda: directory.instances("orders"), timeout=20, what="the instance")
        wait_until(lambda: directory.instances("orders") == (), timeout=20, what="the lease to expire")
    finally:
        watcher.stop()


def test_rules_arrive_and_a_refused_token_never_syncs(control: ControlProcess, client: ControlClient) -> None:
    watcher, _, rulebook = _watcher(control.url)
    denied = Watcher(control.url, "wrong", ServiceDirectory(), RuleBook(), backoff_cap=0.2)
    watcher.start()
    denied.start()
    try:
        [rule] = client.apply_rules(SETTINGS)
        wait_until(lambda: rulebook.get(rule.key) == rule, timeout=20, what="the rule")
        client.delete_rule(*rule.key)
        wait_until(lambda: rulebook.get(rule.key) is None, timeout=20, what="the deletion")
        assert not denied.wait_synced(0.5) and not denied.connected
    finally:
        watcher.stop()
        denied.stop()


def test_the_disk_snapshot_is_written_and_used_when_the_control_plane_is_down(tmp_path: Path) -> None:
    snapshot = tmp_path / "agent" / "snapshot.json"
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log")
    try:
        with ControlClient(plane.url, TOKEN) as client:
            [rule] = client.apply_rules(SETTINGS)
            client.register(Instance(id="", service="orders", host="h", port=1))
        watcher, _, _ = _watcher(plane.url, snapshot_path=snapshot)
        watcher.start()
        try:
            wait_until(
                lambda: snapshot.exists() and json.loads(snapshot.read_text())["directory"]["instances"],
                timeout=20,
                what="the snapshot file",
            )
        finally:
            watcher.stop()
    finally:
        plane.stop()
    assert not list(snapshot.parent.glob(".snapshot.json.*"))  # no temp file left behind

    offline, directory, rulebook = _watcher(plane.url, snapshot_path=snapshot)
    offline.start()
    try:
        assert offline.wait_synced(20)
        assert not offline.connected
        assert [i.address for i in directory.routable("orders")] == ["h:1"]
        assert rulebook.get(rule.key) == rule
    finally:
        offline.stop()


def test_a_corrupt_snapshot_file_is_ignored(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text("{ half a file")
    watcher, directory, _ = _watcher(f"http://127.0.0.1:{free_port()}", snapshot_path=snapshot)
    watcher.start()
    try:
        assert not watcher.wait_synced(1.0)
        assert directory.services() == frozenset()
    finally:
        watcher.stop()


def test_a_watcher_started_before_the_control_plane_connects_when_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    watcher, directory, _ = _watcher(f"http://127.0.0.1:{port}", backoff_cap=0.3)
    watcher.start()
    plane = None
    try:
        plane = ControlProcess(tmp_path / "data", tmp_path / "control.log", port=port)
        with ControlClient(plane.url, TOKEN) as client:
            client.register(Instance(id="", service="orders", host="h", port=1))
        assert watcher.wait_synced(20)
        wait_until(lambda: directory.instances("orders"), timeout=20, what="the instance")
    finally:
        watcher.stop()
        if plane:
            plane.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_restart_after_fork_gives_the_child_its_own_live_stream(control: ControlProcess, client: ControlClient) -> None:
    watcher, directory, _ = _watcher(control.url)
    watcher.start()
    try:
        assert watcher.wait_synced(20)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether its watcher follows a change made after the fork
            status = 1
            try:
                os.close(read_end)
                watcher.restart_after_fork()
                wait_until(lambda: directory.instances("after-fork"), timeout=20)
                os.write(write_end, b"ok")
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        try:
            wait_until(lambda: watcher.connected, timeout=20, what="parent still connected")
            client.register(Instance(id="", service="after-fork", host="h", port=1))
            with os.fdopen(read_end, "rb") as pipe:
                report = pipe.read()
        finally:
            _, status = os.waitpid(pid, 0)
        assert report == b"ok" and os.waitstatus_to_exitcode(status) == 0
        wait_until(lambda: directory.instances("after-fork"), timeout=20, what="the parent's watcher too")
    finally:
        watcher.stop()


def test_a_restarted_control_plane_does_not_empty_the_directory(tmp_path: Path, clock) -> None:
    """SIGKILL and restart: the new plane's first snapshot is empty, yet both instances stay
    routable; the one registered again is in for good, the other leaves when its window ends."""
    data = tmp_path / "data"
    plane = ControlProcess(data, tmp_path / "first.log")
    epochs: list[str] = []
    watcher, directory, _ = _watcher(plane.url, on_epoch=epochs.append, clock=clock)
    watcher.start()
    try:
        with ControlClient(plane.url, TOKEN) as client:
            a = client.register(Instance(id="orders-a", service="orders", host="127.0.0.1", port=1))
            client.register(Instance(id="orders-b", service="orders", host="127.0.0.1", port=2))
            wait_until(lambda: len(directory.routable("orders")) == 2, timeout=20, what="both instances")
            first = client.health()["epoch"]
        assert epochs == [first]
        plane.proc.signal(signal.SIGKILL)
        plane.stop()
        plane = ControlProcess(data, tmp_path / "second.log", port=plane.port)
        with ControlClient(plane.url, TOKEN) as client:
            second = client.health()["epoch"]
            wait_until(lambda: watcher.epoch == second, timeout=20, what="the snapshot of the restarted plane")
            assert epochs == [first, second]  # the agent's cue to register again at once
            assert {i.id for i in directory.routable("orders")} == {"orders-a", "orders-b"}  # the clock stands: both held
            assert set(directory.held_over()) == {"orders-a", "orders-b"}
            client.register(a)
            wait_until(lambda: set(directory.held_over()) == {"orders-b"}, timeout=20, what="orders-a registered again")
        clock.advance(2.0)  # the test plane's lease: orders-b's window ends
        wait_until(lambda: [i.id for i in directory.routable("orders")] == ["orders-a"], timeout=20, what="orders-b to leave")
        assert directory.held_over() == {}
    finally:
        watcher.stop()
        plane.stop()


def test_while_the_control_plane_refuses_connections_a_watcher_tries_again_within_a_quarter_second() -> None:
    assert retry_delay(0.1, refused=True, draw=0.0) == 0.05
    assert retry_delay(0.2, refused=True, draw=0.0) == 0.1
    assert retry_delay(3.2, refused=True, draw=0.0) == RECONNECT_CAP / 2
    assert retry_delay(3.2, refused=True, draw=0.999) < RECONNECT_CAP == 0.25
    # refused by an answer (a bad token, a limit): the backoff as it grew, up to its cap
    assert retry_delay(3.2, refused=False, draw=0.5) == 3.2
