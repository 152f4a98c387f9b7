"""The registry and the watch stream are bounded (issue 11, finding 7).

Seen on the base: 100k registrations, then 20 watchers that never read, each
sent a full snapshot built on the event loop: `/v1/health` took 35 s and the
process grew to 2.1 GiB. Here at a smaller scale, measured by what the process
holds (encodings made, bytes waiting per connection), never by the clock.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from pathlib import Path

import httpx
import pytest

from tests.control.inprocess import AUTH, ServedPlane
from tests.support.procs import wait_until
from tidegate.client.sse import frames
from tidegate.control.app import WRITE_CHUNK
from tidegate.control.limits import Limits
from tidegate.control.plane import ControlPlane
from tidegate.control.storage import SqliteStorage
from tidegate.core.instance import Instance


def _plane(tmp_path: Path, instances: int, **limits: int) -> ControlPlane:
    plane = ControlPlane(SqliteStorage(tmp_path / "data"), instance_ttl=600, limits=Limits(**limits))
    for n in range(instances):
        plane.register({"service": f"svc{n % 50}", "host": "10.1.2.3", "port": 1000 + n, "metadata": {"zone": "eu-west-1a"}})
    return plane


def test_a_snapshot_is_encoded_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a snapshot's encoding is held up, the plane still answers: it is not built on the loop."""
    plane = _plane(tmp_path, instances=100)
    entered, release = threading.Event(), threading.Event()
    to_dict = Instance.to_dict

    def held(self: Instance) -> dict:
        if not release.is_set():
            entered.set()
            release.wait(60)
        return to_dict(self)

    monkeypatch.setattr(Instance, "to_dict", held)
    served = ServedPlane(plane)
    try:
        served.non_reading_watcher()
        assert entered.wait(30), "the watcher's snapshot was never encoded"
        health = httpx.get(f"{served.url}/v1/health", timeout=10)  # on the base: the loop is stuck in the encoding
        assert health.status_code == 200
    finally:
        release.set()
        served.stop()


def test_twenty_watchers_that_never_read_share_one_snapshot_and_each_holds_little(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instances = 4000  # a snapshot of about 1 MB
    plane = _plane(tmp_path, instances=instances)
    encoded = itertools.count()
    to_dict = Instance.to_dict

    def counted(self: Instance) -> dict:
        next(encoded)
        return to_dict(self)

    monkeypatch.setattr(Instance, "to_dict", counted)
    served = ServedPlane(plane)
    try:
        for _ in range(20):
            served.non_reading_watcher()
        wait_until(lambda: len(plane.fanout) == 20, timeout=60, what="20 watchers subscribed")
        # Each stream has written all its socket takes and waits for its reader.
        wait_until(lambda: served.paused_connections() == 20, timeout=60, what="every stream to wait for its reader")
        assert next(encoded) == instances  # one encoding of each instance, for all twenty (the base: twenty)
        buffers = served.write_buffers()
        # What the process holds per watcher: at most a write or two, not a copy of the snapshot
        # (the base: the whole snapshot less what the kernel took, ~1 MB each).
        assert max(buffers) <= 3 * WRITE_CHUNK, buffers
        assert httpx.get(f"{served.url}/v1/health", timeout=10).json()["watchers"] == 20
    finally:
        served.stop()


def test_a_watcher_cut_off_for_not_reading_resumes_from_its_last_revision(tmp_path: Path) -> None:
    plane = _plane(tmp_path, instances=1, watcher_backlog_bytes=4096)
    served = ServedPlane(plane)
    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    try:
        with httpx.Client(base_url=served.url, headers=AUTH, transport=small_buffer, timeout=30) as http:
            seen: list[int] = []
            with http.stream("GET", "/v1/watch") as response:
                stream = frames(response.iter_lines())
                snapshot = next(f for f in stream if f.event == "snapshot")
                first = int(snapshot.id or 0)
                # Stop reading while 3000 changes (~1 MB) are published: far past the 4 KiB backlog.
                served.call(lambda: [plane.register({"service": "burst", "host": "10.9.9.9", "port": 1 + n}) for n in range(3000)])
                wait_until(lambda: plane.fanout.cut_offs == 1, timeout=30, what="the watcher to be cut off")
                assert len(plane.fanout) == 0
                # Reading again: what was already on its way arrives, then the stream ends
                # (or the connection is gone, when the plane dropped it first).
                try:
                    seen.extend(int(f.id) for f in stream if f.event == "instance" and f.id)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    pass
            head = plane.revision
            assert seen == list(range(first + 1, first + 1 + len(seen))) and len(seen) < head - first
            # Reconnecting from the last revision it has: exactly the changes it missed, no snapshot.
            with http.stream("GET", "/v1/watch", headers={"Last-Event-ID": str(seen[-1] if seen else first)}) as response:
                rest: list[int] = []
                for frame in frames(response.iter_lines()):
                    assert frame.event != "snapshot"
                    if frame.event == "instance" and frame.id:
                        rest.append(int(frame.id))
                    if rest and rest[-1] == head:
                        break
            assert seen + rest == list(range(first + 1, head + 1))
    finally:
        served.stop()


def test_watchers_past_the_limit_are_refused_with_429_naming_it(tmp_path: Path) -> None:
    plane = _plane(tmp_path, instances=1, max_watchers=2)
    served = ServedPlane(plane)
    try:
        with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as http:
            with http.stream("GET", "/v1/watch") as one, http.stream("GET", "/v1/watch") as two:
                assert one.status_code == two.status_code == 200
                refused = http.get("/v1/watch")
                assert refused.status_code == 429
                assert refused.json()["limit"] == "max_watchers" and "--max-watchers" in refused.json()["error"]
            wait_until(lambda: plane.watchers == 0, timeout=30, what="the closed streams to give their places back")
            with http.stream("GET", "/v1/watch") as again:
                assert again.status_code == 200
    finally:
        served.stop()


def test_a_watcher_whose_writes_wait_too_long_is_disconnected(tmp_path: Path) -> None:
    """A client that never reads holds a write waiting forever, and with it the snapshot it
    was sent; past the write stall its connection is dropped (and its place given back)."""
    plane = _plane(tmp_path, instances=3000)
    served = ServedPlane(plane, ping_interval=0.1, write_stall=0.5)
    try:
        client = served.non_reading_watcher()
        wait_until(lambda: len(plane.fanout) == 1, timeout=60, what="the watcher subscribed")
        wait_until(lambda: plane.watchers == 0 and len(plane.fanout) == 0, timeout=60, what="the stalled stream to be dropped")
        assert served.write_buffers() == []  # its connection is gone, with what was buffered for it
        client.settimeout(30)  # reading again, it gets what the kernel still held, then the end
        with contextlib.suppress(ConnectionResetError):
            while client.recv(65536):
                pass
    finally:
        served.stop()
