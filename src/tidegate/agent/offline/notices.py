"""The consumer side of lossless offline: act at once on any word that an instance is going away.

Three channels say an instance drains — the control plane's push (the watch
stream applies it to the directory by itself), a direct `POST /drain-notice`
from the instance, and the `x-tidegate-draining` header on its responses; the
first to arrive wins. A notice marks the instance DRAINING in this process's
directory (balancers drop it at once) and asks every HTTP client to drop its
idle keep-alive connections to that address the next time it is used (in its
own thread or event loop, where that is safe).

A connection that fails before anything was sent (refused, reset on connect)
ejects the instance passively for a backoff (`tidegate.core.drain.Ejections`),
without waiting for its lease to expire; when the backoff is over it is let
back in and the next call re-checks it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tidegate.core.drain import Ejections
from tidegate.core.instance import InstanceState

if TYPE_CHECKING:
    from tidegate.core.directory import ServiceDirectory

log = logging.getLogger("tidegate")

#: How long an address stays known as draining (its server has stopped long before).
NOTICE_TTL_S = 120.0


class DrainNotices:
    """What this process knows of the instances it calls that are draining or failing."""

    def __init__(self, directory: ServiceDirectory, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.clock = clock
        self.ejections = Ejections()
        self._lock = threading.Lock()
        self._draining: dict[str, float] = {}  # address -> when told
        #: Addresses whose idle connections clients drop; a client remembers the last
        #: sequence number it acted on, so the request path compares one int.
        self.drop_sequence = 0
        self._drops: list[tuple[int, str, int]] = []

    # -- the three channels ----------------------------------------------------------------

    def notice(self, instance_id: str, address: str, channel: str) -> bool:
        """An instance drains: out of balancing now. False when it was known already."""
        host, port = split_address(address)
        now = self.clock()
        with self._lock:
            known = address in self._draining
            self._draining[address] = now
            if not known:
                self.drop_sequence += 1
                self._drops = [*(d for d in self._drops[-31:]), (self.drop_sequence, host, port)]
        marked = self.directory.mark(instance_id, InstanceState.DRAINING) if instance_id else False
        if not marked and port:
            marked = self.directory.mark_address(host, port, InstanceState.DRAINING)
        if not known:
            log.info("tidegate: %s (%s) drains, told by %s; no new calls go there", instance_id or address, address, channel)
        return not known

    def is_draining(self, host: str, port: int) -> bool:
        """Whether the instance at host:port said it drains (so it only closes idle connections)."""
        address = f"{host}:{port}"
        told = self._draining.get(address)
        if told is None:
            return False
        if self.clock() - told > NOTICE_TTL_S:
            with self._lock:
                self._draining.pop(address, None)
            return False
        return True

    # -- passive ejection ----------------------------------------------------------------------

    def connect_failed(self, instance_id: str) -> None:
        """Nothing could be sent to the instance: out of balancing for a backoff."""
        if self.ejections.eject(instance_id, self.clock()):
            self.directory.mark(instance_id, InstanceState.DRAINING)
            log.info("tidegate: %s refused a connection; out of balancing until a re-check", instance_id)

    def recheck_due(self) -> None:
        """Let instances whose ejection backoff is over back into balancing (the next call re-checks)."""
        if self.clock() < self.ejections.next_due:
            return
        for instance_id in self.ejections.due(self.clock()):
            registered = self.directory.find(instance_id)
            if registered is None or self.is_draining(registered.host, registered.port):
                continue
            self.directory.mark(instance_id, registered.state)

    # -- keep-alive connections ------------------------------------------------------------------

    def drops_since(self, sequence: int) -> list[tuple[str, int]]:
        """Addresses told since `sequence` whose idle connections a client should drop."""
        return [(host, port) for seq, host, port in self._drops if seq > sequence]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        return address, 0
