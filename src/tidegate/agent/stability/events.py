"""Stability events for the control plane: breaker state changes at once, blocks counted per second.

The request path only appends to a list or bumps a count under a short lock;
a daemon thread (started on the first event) posts them with
`ControlClient.post_event`. Blocks are aggregated per (resource, rule, kind)
and posted once a second as one `block` event with their `count`. A control
plane that is down loses the events (logged at debug); the request path never
waits for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.errors import BlockedError

if TYPE_CHECKING:
    from tidegate.agent.runtime import AgentRuntime

log = logging.getLogger("tidegate")

FLUSH_S = 1.0
#: Events kept while the control plane is slow; older ones are dropped beyond it.
MAX_PENDING = 1000

Post = Callable[[dict[str, Any]], None]


class StabilityEvents:
    """Queue of events and block counts, posted by a background thread through `post`."""

    def __init__(self, post: Post, service: str = "", flush_s: float = FLUSH_S) -> None:
        self._post = post
        self.service = service
        self.flush_s = flush_s
        self._reset()

    @classmethod
    def for_runtime(cls, runtime: AgentRuntime) -> StabilityEvents:
        config = runtime.config
        clients: dict[int, Any] = {}  # by process id: a forked child must not use its parent's connections

        def post(event: dict[str, Any]) -> None:
            client = clients.get(os.getpid())
            if client is None:
                from tidegate.client.control import ControlClient

                clients.clear()
                client = clients[os.getpid()] = ControlClient(config.control, config.token or None, timeout=2.0)
            client.post_event(event)

        return cls(post, config.service)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._blocks: dict[tuple[str, str, str], int] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, event: dict[str, Any]) -> None:
        """Post `event` soon (from the background thread)."""
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[0]
            self._pending.append({**event, "pid": os.getpid()})
            self._ensure_thread()
        self._wake.set()

    def count_block(self, error: BlockedError) -> None:
        key = (error.resource, error.rule, type(error).__name__)
        with self._lock:
            self._blocks[key] = self._blocks.get(key, 0) + 1
            self._ensure_thread()

    def flush(self) -> None:
        """Post what is pending now (the background thread does this every `flush_s`)."""
        with self._lock:
            events, self._pending = self._pending, []
            blocks, self._blocks = self._blocks, {}
        pid = os.getpid()
        for (resource, rule, kind), count in blocks.items():
            events.append(
                {"type": "block", "service": self.service, "resource": resource, "rule": rule, "error": kind, "count": count, "pid": pid}
            )
        for event in events:
            try:
                self._post(event)
            except Exception as error:  # the control plane may be down; events are best effort
                log.debug("tidegate: stability event not posted: %s", error)

    def after_fork_in_child(self) -> None:
        """A forked child has no thread and must not post its parent's events twice."""
        self._reset()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tidegate-stability-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()
