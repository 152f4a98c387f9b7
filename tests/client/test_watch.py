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


class _HoldAfterSnapshot:
    """A watcher `gate` that holds the first frame after the snapshot (the third time it is
    entered: connecting, the snapshot, then that frame) until `release` is set or 3 s pass."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = threading.Event()

    def __enter__(self) -> None:
        self.entered += 1
        if self.entered == 3:
            self.release.wait(3)

    def __exit__(self, *exc: object) -> None:
        pass


def test_synced_means_caught_up_with_the_head_not_just_an_old_shared_snapshot(control: ControlProcess, client: ControlClient) -> None:
    """The plane sends its newest shared snapshot, then the changes after it: a watcher is synced
    only once it applied them too (up to the X-Tidegate-Head its answer named). Rules, which no
    lease expires while the watcher is held."""
    first, _, _ = _watcher(control.url)
    first.start()  # the control plane builds its shared snapshot now, with no rule
    try:
        assert first.wait_synced(20)
    finally:
        first.stop()
    applied = set()
    for n in (1, 2, 3):
        settings = {**SETTINGS, "metadata": {"name": f"s{n}"}, "spec": {"service": f"s{n}"}}
        applied |= {rule.key for rule in client.apply_rules(settings)}
    gate = _HoldAfterSnapshot()
    watcher, _, rulebook = _watcher(control.url, gate=gate)
    watcher.start()
    try:
        synced = watcher.wait_synced(30)
        seen = {key for key in applied if rulebook.get(key) is not None}
        gate.release.set()
        assert synced and seen == applied, (gate.entered, seen)
        assert watcher.head is not None and watcher.revision >= watcher.head
    finally:
        gate.release.set()
        watcher.stop()


class _FutureControlPlane:
    """A real HTTP server answering /v1/watch as a newer control plane might: head 7, a snapshot at
    5, then two changes of a kind this watcher does not know; the stream then stays open."""

    FRAMES = (
        b'event: snapshot\nid: 5\ndata: {"revision":5,"epoch":"e","instances":[],"rules":[],"services":["orders"]}\n\n'
        b'event: novel\nid: 6\ndata: {"revision":6,"what":"a kind from later"}\n\n'
        b'event: novel\nid: 7\ndata: {"revision":7,"what":"another"}\n\n'
    )

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        frames, done = self.FRAMES, threading.Event()
        self.done = done

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("X-Tidegate-Head", "7")
                self.end_headers()
                self.wfile.write(frames)
                self.wfile.flush()
                done.wait(30)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_change_of_a_kind_the_watcher_does_not_know_still_advances_it_to_the_head() -> None:
    plane = _FutureControlPlane()
    watcher, directory, _ = _watcher(plane.url)
    watcher.start()
    try:
        assert watcher.wait_synced(20)
        assert (watcher.revision, watcher.head) == (7, 7)  # else a resume would replay them, and synced would wait for ever
        assert directory.knows("orders")
    finally:
        plane.close()
        watcher.stop()


def test_a_disk_snapshot_does_not_make_a_watcher_synced_while_a_control_plane_answers(tmp_path: Path, control: ControlProcess) -> None:
    """A control plane that answers but does not stream (here: a refused token): the last snapshot
    is loaded to route with, but it is not taken as current."""
    snapshot = tmp_path / "snapshot.json"
    with ControlClient(control.url, TOKEN) as client:
        [rule] = client.apply_rules(SETTINGS)  # a rule: no lease expires it before the snapshot is written
    writer, _, _ = _watcher(control.url, snapshot_path=snapshot)
    writer.start()
    try:
        assert writer.wait_synced(20)
    finally:
        writer.stop()
    assert snapshot.exists()
    refused = Watcher(control.url, "wrong-token-0123456789", ServiceDirectory(), RuleBook(), snapshot_path=snapshot, backoff_cap=0.2)
    refused.start()
    try:
        wait_until(lambda: refused.rulebook.get(rule.key) == rule, timeout=20, what="the disk snapshot to load")
        assert refused.reached and not refused.wait_synced(0.5)
    finally:
        refused.stop()
