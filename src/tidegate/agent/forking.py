"""Holds `fork()` back while an agent thread is in the middle of something.

gunicorn forks its workers from the arbiter while the arbiter's agent threads
register, heartbeat or answer the admin endpoint. A fork that lands while one
of them holds a lock (a module being imported, a connection pool) hands the
child that lock held forever, and the worker hangs. Agent threads do their work
inside `FORK_GATE`; a fork waits at the gate until the work is done (a few
milliseconds; at most a control-plane timeout) and the child gets a fresh gate.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType


class ForkGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        os.register_at_fork(before=self._before, after_in_parent=self._after_in_parent, after_in_child=self._after_in_child)

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._lock.release()

    def _before(self) -> None:
        self._lock.acquire()

    def _after_in_parent(self) -> None:
        self._lock.release()

    def _after_in_child(self) -> None:
        self._lock = threading.Lock()


FORK_GATE = ForkGate()


def process_alive(pid: int) -> bool:
    """Whether process `pid` (a server's worker) still runs. A worker that exited but was not reaped yet (a
    zombie: its master is busy draining, so it reaps nobody) counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: the signal check is all there is
    return state not in (b"Z", b"X")
