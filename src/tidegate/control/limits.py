"""The control plane's bounds on what clients can make it hold: one place, one name each.

Each bound that an operator may need to move is a flag of `tidegate control`
(`--max-instances`, ...); a request past one is refused with 429 (a count) or
413 (a size) and a message naming the limit and its flag. The README's
"Security model" section lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Live instances in the registry (a re-registration of a held id does not count twice).
MAX_INSTANCES = 50_000
#: Service names remembered (they outlive their instances).
MAX_SERVICES = 10_000
#: One instance's `metadata`, encoded as compact JSON.
MAX_METADATA_BYTES = 4096
#: Open watch streams (each agent process holds one).
MAX_WATCHERS = 10_000
#: Bytes of changes one watcher may have pending before it is cut off (it reconnects and
#: resumes from its last revision: the changes it missed are replayed, or it takes a snapshot).
WATCHER_BACKLOG_BYTES = 8 * 1024 * 1024
#: Seconds one write of a watch stream may wait for its client to read before the
#: connection is dropped (a client that reads gets a ping every 5 s, and gives up
#: itself after 20 s without a byte).
WATCHER_WRITE_STALL_SECONDS = 30.0
#: Agent-reported events kept for the console, and the size of one.
RECENT_EVENTS = 200
MAX_EVENT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds one control plane enforces (the flags' values)."""

    max_instances: int = MAX_INSTANCES
    max_services: int = MAX_SERVICES
    max_metadata_bytes: int = MAX_METADATA_BYTES
    max_watchers: int = MAX_WATCHERS
    watcher_backlog_bytes: int = WATCHER_BACKLOG_BYTES

    def __post_init__(self) -> None:
        for name in ("max_instances", "max_services", "max_metadata_bytes", "max_watchers", "watcher_backlog_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = Limits()

#: The flag that sets each bound, for refusal messages.
FLAGS = {
    "max_instances": "--max-instances",
    "max_services": "--max-services",
    "max_metadata_bytes": "--max-metadata-bytes",
    "max_watchers": "--max-watchers",
    "watcher_backlog_bytes": "--watcher-backlog-bytes",
}
