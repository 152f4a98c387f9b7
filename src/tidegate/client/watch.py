"""`Watcher`: keeps a ServiceDirectory and a RuleBook in step with the control
plane's watch stream, from a daemon thread.

It resumes after a disconnect from the last revision it applied (the server
replays what was missed, or sends a snapshot), reconnects with capped backoff
(at most `RECONNECT_CAP` while the control plane refuses connections: a
restart is back within a second; a TLS handshake that fails is no restart, and
backs off as any other error), and keeps an on-disk snapshot so a process
that starts while the control plane is down still routes with the last known
instances and rules.

Synced (`wait_synced`) means current: the control plane's answer names its head
revision when the stream opened (`X-Tidegate-Head`), and the watcher is synced
once it applied the stream up to it (the newest shared snapshot the plane sends
may be older than its head, the changes after it follow). Every frame advances
the revision, one of a kind this watcher does not know too, so the head is
always reached. The on-disk snapshot counts only while no control plane answers
(it is loaded when the first attempt does not stream, and never over what a
stream applied). A control plane that sends no head (older than this header) is
taken as synced at its first snapshot, as before.

A control plane that restarted has a new epoch and an empty registry. Its
first snapshot goes to the directory with the epoch and the plane's lease, so
the instances it lacks are held over for one lease while their agents register
again (`tidegate.core.directory`); a timer removes those that do not come back
once the window ends (while the stream is up: with the control plane out of
reach, nothing is dropped). `on_epoch` hears every new epoch: the agent
registers its own instances again at once.

Fork safety: the thread does not survive `fork()`. A child process (a
gunicorn worker forked from a preloaded master) calls `restart_after_fork()`,
which drops the parent's connection and starts a fresh thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from tidegate.client.control import tls_verify
from tidegate.client.snapshot import load_snapshot, write_snapshot
from tidegate.client.sse import Frame, frames
from tidegate.control.eventlog import HEAD_HEADER
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook, StoredRule

log = logging.getLogger("tidegate.watch")

#: Reconnect delays: start small (a restart is usually quick), double, cap.
BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
#: The longest wait between connection attempts while the control plane refuses them (it is
#: restarting, or down): a refused connection costs it nothing, and a restart resyncs quickly.
RECONNECT_CAP = 0.25
#: How long instances of an earlier epoch are held over when the snapshot does not say the
#: control plane's lease (`instance_ttl`): the control plane's default lease.
DEFAULT_GRACE_S = 15.0
#: The server pings every few seconds; this long without a byte means the link is dead.
READ_TIMEOUT = 20.0
#: A burst of changes is written to disk at most this often (the last one on the next frame or ping).
SNAPSHOT_DEBOUNCE = 1.0


def retry_delay(backoff: float, refused: bool, draw: float) -> float:
    """The wait before the next connection attempt: `backoff`, or while the control plane refuses
    connections at most `RECONNECT_CAP`, spread over its upper half by `draw` (in [0, 1)) so a
    thousand watchers do not come back in one instant."""
    if not refused:
        return backoff
    return min(backoff, RECONNECT_CAP) * (0.5 + draw / 2)


def tls_failure(error: BaseException) -> bool:
    """Whether a failed connection got as far as a TLS handshake that failed (a certificate no
    trusted CA signed, ...), rather than finding nobody listening."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class Watcher:
    """A daemon thread reading the watch stream into `directory` and `rulebook`."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        directory: ServiceDirectory,
        rulebook: RuleBook,
        snapshot_path: Path | None = None,
        on_change: Callable[[], None] | None = None,
        backoff_cap: float = BACKOFF_CAP,
        on_epoch: Callable[[str], None] | None = None,
        gate: AbstractContextManager[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ca: str | None = None,
    ) -> None:
        """`on_epoch(epoch)` is called (on the watch thread) for every snapshot from a control
        plane epoch other than the last one this watcher saw, the first included. `gate` is
        held while connecting and while applying a frame (the agent's fork gate, so a fork
        never copies the directory's lock held). `clock` times the grace windows."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._verify = tls_verify(ca)  # an https:// control plane: the CA file `ca`, default $TIDEGATE_CA
        self.directory = directory
        self.rulebook = rulebook
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self._on_change = on_change
        self._on_epoch = on_epoch
        self._gate: AbstractContextManager[Any] = gate if gate is not None else contextlib.nullcontext()
        self._clock = clock
        self._backoff_cap = backoff_cap
        self._revision = 0  # last revision applied, sent back as Last-Event-ID
        self._head: int | None = None  # the head the open stream's control plane announced (None: none said)
        self._streamed = False  # a stream delivered something: the disk snapshot is older than it
        self._from_disk = False  # the disk snapshot was loaded (only ever before a stream delivered)
        self._answered = False  # the current connection attempt got an HTTP answer
        self._epoch = ""  # the epoch of the last snapshot applied
        self._announce = ""  # a new epoch `on_epoch` is to hear of
        self._started = False
        self._reset_runtime()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        """End the stream and the thread; writes the snapshot if it is behind."""
        self._stopping.set()
        self._cut()
        self._disarm()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._flush(force=True)
        self._http.close()

    def restart_after_fork(self) -> None:
        """In a forked child: forget the parent's thread and connection, start anew."""
        self._reset_runtime(synced=self._synced.is_set(), reached=self._reached.is_set())
        if self._started:
            self._thread.start()

    def wait_synced(self, timeout: float, unreachable_timeout: float | None = None) -> bool:
        """True once the directory and rules are current: applied up to the head the control
        plane announced when the stream opened, or, while no control plane answers, loaded from
        the on-disk snapshot. With `unreachable_timeout`, give up after that long when no control
        plane has answered by then (a start that should not wait long for one that is down)."""
        if unreachable_timeout is None or unreachable_timeout >= timeout:
            return self._synced.wait(timeout)
        if self._synced.wait(unreachable_timeout):
            return True
        return self._reached.is_set() and self._synced.wait(timeout - unreachable_timeout)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def reached(self) -> bool:
        """Whether a control plane answered any attempt of this watcher (whatever its status)."""
        return self._reached.is_set()

    @property
    def revision(self) -> int:
        """The last revision applied."""
        return self._revision

    @property
    def head(self) -> int | None:
        """The head revision the control plane announced when the open (or last) stream began."""
        return self._head

    @property
    def epoch(self) -> str:
        """The control plane's epoch in the last snapshot applied ("" before the first)."""
        return self._epoch

    # -- the thread ----------------------------------------------------------------

    def _reset_runtime(self, synced: bool = False, reached: bool = False) -> None:
        headers = {"Accept": "text/event-stream"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=self._verify)
        self._thread = threading.Thread(target=self._run, name="tidegate-watch", daemon=True)
        self._stopping = threading.Event()
        self._synced = threading.Event()
        if synced:
            self._synced.set()
        self._reached = threading.Event()  # a control plane answered an attempt (any status)
        if reached:
            self._reached.set()
        self._sock_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._connected = False
        self._dirty = False
        self._last_write = 0.0
        self._tried_disk = False
        self._expiry_lock = threading.Lock()
        self._expiry: threading.Timer | None = None

    def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            refused = False
            self._answered = False
            try:
                if self._stream():
                    backoff = BACKOFF_START
            except httpx.ConnectError as error:
                refused = not tls_failure(error)  # nobody listens (a restart): come back soon
                if self._stopping.is_set():
                    pass
                elif refused:
                    log.debug("watch stream to %s: cannot connect: %s; retrying", self.base_url, error)
                else:  # it answers, with a certificate this watcher cannot verify: no restart, say why
                    log.warning(
                        "watch stream to %s: TLS refused: %s (TIDEGATE_CA names the CA to verify it with); retrying",
                        self.base_url,
                        error,
                    )
            except (httpx.HTTPError, OSError) as error:
                if not self._stopping.is_set():
                    log.info("watch stream to %s lost: %s; reconnecting", self.base_url, error)
            except Exception:  # a bug must not end the thread: the directory would freeze
                log.exception("watch stream to %s failed; reconnecting", self.base_url)
            finally:
                self._connected = False
                with self._sock_lock:
                    self._sock = None
            if not self._synced.is_set() and not self._streamed:
                self._load_disk_once()
                if self._from_disk and not self._answered:  # nobody answers: the last snapshot stands in
                    self._synced.set()
            self._flush(force=True)
            if self._stopping.wait(retry_delay(backoff, refused, random.random())):
                break
            backoff = min(backoff * 2, self._backoff_cap)

    def _stream(self) -> bool:
        """Read one connection to its end; True when it delivered anything."""
        headers = {"Last-Event-ID": str(self._revision)} if self._revision else {}
        delivered = False
        request = self._http.build_request("GET", "/v1/watch", headers=headers)
        with self._gate:  # connecting may import a codec or resolve a name: not while a fork copies that
            response = self._http.send(request, stream=True)
        self._answered = True
        self._reached.set()
        try:
            if response.status_code != 200:
                response.read()
                log.warning("watch refused by %s (%d): %s", self.base_url, response.status_code, response.text[:300])
                return False
            stream = response.extensions.get("network_stream")
            with self._sock_lock:
                self._sock = stream.get_extra_info("socket") if stream is not None else None
            if self._stopping.is_set():
                return False
            self._head = _announced_head(response.headers.get(HEAD_HEADER))
            if self._head is not None and self._revision and self._revision == self._head:
                self._synced.set()  # resumed at the head: nothing to replay, what is applied is current
            self._connected = True
            self._arm()  # grace windows run again while connected
            for frame in frames(response.iter_lines()):
                if frame.event != "ping":
                    with self._gate:
                        self._apply(frame)
                    delivered = True
                    if self._announce:
                        epoch, self._announce = self._announce, ""
                        self._new_epoch(epoch)
                else:
                    self._expire()
                self._flush()
        finally:
            response.close()
        return delivered

    def _cut(self) -> None:
        """Unblock a read in progress (stop): shut the socket down under it."""
        with self._sock_lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- applying frames -------------------------------------------------------------

    def _apply(self, frame: Frame) -> None:
        revision: int | None = None
        try:
            data: Any = json.loads(frame.data)
            revision = int(data["revision"])
            if frame.event == "snapshot":
                if revision < self.directory.revision:
                    log.warning(
                        "control plane at %s is at revision %d, behind this directory's %d (was its data replaced?); "
                        "instance changes up to %d will be ignored as stale",
                        self.base_url,
                        revision,
                        self.directory.revision,
                        self.directory.revision,
                    )
                epoch = str(data.get("epoch") or "")
                lease = data.get("instance_ttl")
                grace = float(lease) if isinstance(lease, (int, float)) and not isinstance(lease, bool) and lease > 0 else DEFAULT_GRACE_S
                instances = [Instance.from_dict(item) for item in data["instances"]]
                self.directory.replace(revision, instances, data.get("services", ()), epoch=epoch, now=self._clock(), grace_s=grace)
                self.rulebook.replace(StoredRule.from_dict(item) for item in data["rules"])
                self._arm()
                if epoch and epoch != self._epoch:
                    self._epoch = self._announce = epoch  # told once the frame is applied, outside the gate
            elif frame.event == "instance":
                instance = Instance.from_dict(data["instance"])
                if data["op"] == "delete":
                    self.directory.remove(revision, instance.service, instance.id)
                else:
                    self.directory.put(revision, instance)
            elif frame.event == "rule":
                rule = StoredRule.from_dict(data["rule"])
                if data["op"] == "delete":
                    self.rulebook.remove(rule.key, revision)
                else:
                    self.rulebook.put(rule)
            else:  # a kind of change this watcher does not know: skipped, its revision still passed
                self._advance(revision, more=data.get("more") is True)
                return
        except (ValueError, KeyError, TypeError) as bad:
            log.warning("ignored a malformed %r frame from %s: %r", frame.event, self.base_url, bad)
            if revision is not None and frame.event != "snapshot":  # a replay would bring it back as it is
                self._advance(revision, more=False)
            return
        self._streamed = True
        if frame.event == "snapshot":
            self._revision = revision
            if self._head is None:  # a control plane that announces no head: its snapshot is all we know
                self._synced.set()
            self._reached_head()
        else:
            self._advance(revision, more=data.get("more") is True)
        self._dirty = True
        self._changed()

    def _advance(self, revision: int, more: bool) -> None:
        """The stream passed the change at `revision` ("more": another change at this revision
        follows, one etcd transaction: resume before it)."""
        self._revision = max(self._revision, revision - 1 if more else revision)
        self._reached_head()

    def _reached_head(self) -> None:
        if self._head is not None and self._revision >= self._head:
            self._synced.set()

    # -- the grace window of instances held over from an earlier epoch -------------------

    def _arm(self) -> None:
        """Time the end of the next grace window, if an instance is held over."""
        held = self.directory.held_over()
        if not held or self._stopping.is_set():
            return
        delay = max(0.0, min(held.values()) - self._clock())
        with self._expiry_lock:
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry = threading.Timer(delay + 0.01, self._expire)
            self._expiry.name = "tidegate-watch-grace"
            self._expiry.daemon = True
            self._expiry.start()

    def _disarm(self) -> None:
        with self._expiry_lock:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None

    def _expire(self) -> None:
        """A grace window may have ended: instances not registered again leave (only while the
        stream is up: a control plane out of reach is no news about them)."""
        held = len(self.directory.held_over())
        if not self._connected or not held:
            return
        try:
            with self._gate:
                self.directory.expire(self._clock())
                if len(self.directory.held_over()) < held:
                    self._dirty = True
                    self._changed()
        except Exception:  # never let the timer thread die with an error nobody sees
            log.exception("watch: expiring held-over instances failed")
            return
        self._arm()

    def _new_epoch(self, epoch: str) -> None:
        if self._on_epoch is None:
            return
        try:
            self._on_epoch(epoch)
        except Exception:  # the agent's callback must not stop the stream
            log.exception("watch on_epoch callback failed")

    # -- on-disk snapshot --------------------------------------------------------------

    def _flush(self, force: bool = False) -> None:
        if self.snapshot_path is None or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._last_write < SNAPSHOT_DEBOUNCE:
            return
        try:
            write_snapshot(self.snapshot_path, self.directory, self.rulebook, self._revision)
        except OSError as error:
            log.warning("could not write the watch snapshot %s: %s", self.snapshot_path, error)
            return
        self._dirty = False
        self._last_write = now

    def _load_disk_once(self) -> None:
        if self._tried_disk or self.snapshot_path is None or not self.snapshot_path.exists():
            return
        self._tried_disk = True
        try:
            revision = load_snapshot(self.snapshot_path, self.directory, self.rulebook)
        except ValueError as bad:
            log.warning("%s", bad)
            return
        # Resume from it: the server replays what came after, or sends a snapshot.
        self._revision = revision
        self._from_disk = True
        log.info("control plane not streaming; loaded the last snapshot (revision %d) from %s", revision, self.snapshot_path)
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # the user's callback must not stop the stream
                log.exception("watch on_change callback failed")


def _announced_head(value: str | None) -> int | None:
    """The head revision a watch answer names (`X-Tidegate-Head`); None when it names none
    (a control plane from before the header) or nothing readable (then the first snapshot counts)."""
    try:
        head = int(value) if value is not None else None
    except ValueError:
        log.warning("watch: ignored a %s header that is no revision: %r", HEAD_HEADER, value[:40] if value else value)
        return None
    return head if head is None or head >= 0 else None
