"""`Watcher`: keeps a ServiceDirectory and a RuleBook in step with the control
plane's watch stream, from a daemon thread.

It resumes after a disconnect from the last revision it applied (the server
replays what was missed, or sends a snapshot), reconnects with capped backoff,
and keeps an on-disk snapshot so a process that starts while the control plane
is down still routes with the last known instances and rules.

Fork safety: the thread does not survive `fork()`. A child process (a
gunicorn worker forked from a preloaded master) calls `restart_after_fork()`,
which drops the parent's connection and starts a fresh thread.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tidegate.client.control import tls_verify
from tidegate.client.snapshot import load_snapshot, write_snapshot
from tidegate.client.sse import Frame, frames
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance
from tidegate.core.rulebook import RuleBook, StoredRule

log = logging.getLogger("tidegate.watch")

#: Reconnect delays: start small (a restart is usually quick), double, cap.
BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
#: The server pings every few seconds; this long without a byte means the link is dead.
READ_TIMEOUT = 20.0
#: A burst of changes is written to disk at most this often (the last one on the next frame or ping).
SNAPSHOT_DEBOUNCE = 1.0


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
        ca: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._verify = tls_verify(ca)  # an https:// control plane: the CA file `ca`, default $TIDEGATE_CA
        self.directory = directory
        self.rulebook = rulebook
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self._on_change = on_change
        self._backoff_cap = backoff_cap
        self._revision = 0  # last revision applied, sent back as Last-Event-ID
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
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._flush(force=True)
        self._http.close()

    def restart_after_fork(self) -> None:
        """In a forked child: forget the parent's thread and connection, start anew."""
        self._reset_runtime(synced=self._synced.is_set())
        if self._started:
            self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        """True once a snapshot (from the stream or from disk) was applied."""
        return self._synced.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def revision(self) -> int:
        """The last revision applied."""
        return self._revision

    # -- the thread ----------------------------------------------------------------

    def _reset_runtime(self, synced: bool = False) -> None:
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
        self._sock_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._connected = False
        self._dirty = False
        self._last_write = 0.0
        self._tried_disk = False

    def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            try:
                if self._stream():
                    backoff = BACKOFF_START
            except (httpx.HTTPError, OSError) as error:
                if not self._stopping.is_set():
                    log.info("watch stream to %s lost: %s; reconnecting", self.base_url, error)
            except Exception:  # a bug must not end the thread: the directory would freeze
                log.exception("watch stream to %s failed; reconnecting", self.base_url)
            finally:
                self._connected = False
                with self._sock_lock:
                    self._sock = None
            if not self._synced.is_set():
                self._load_disk_once()
            self._flush(force=True)
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, self._backoff_cap)

    def _stream(self) -> bool:
        """Read one connection to its end; True when it delivered anything."""
        headers = {"Last-Event-ID": str(self._revision)} if self._revision else {}
        delivered = False
        with self._http.stream("GET", "/v1/watch", headers=headers) as response:
            if response.status_code != 200:
                response.read()
                log.warning("watch refused by %s (%d): %s", self.base_url, response.status_code, response.text[:300])
                return False
            stream = response.extensions.get("network_stream")
            with self._sock_lock:
                self._sock = stream.get_extra_info("socket") if stream is not None else None
            if self._stopping.is_set():
                return False
            self._connected = True
            for frame in frames(response.iter_lines()):
                if frame.event != "ping":
                    self._apply(frame)
                    delivered = True
                self._flush()
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
                self.directory.replace(revision, [Instance.from_dict(item) for item in data["instances"]], data.get("services", ()))
                self.rulebook.replace(StoredRule.from_dict(item) for item in data["rules"])
                self._synced.set()
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
            else:
                return
        except (ValueError, KeyError, TypeError) as bad:
            log.warning("ignored a malformed %r frame from %s: %r", frame.event, self.base_url, bad)
            return
        self._revision = max(self._revision, revision) if frame.event != "snapshot" else revision
        self._dirty = True
        self._changed()

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
        self._synced.set()
        log.info("control plane unreachable; loaded the last snapshot (revision %d) from %s", revision, self.snapshot_path)
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # the user's callback must not stop the stream
                log.exception("watch on_change callback failed")
