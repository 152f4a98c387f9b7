"""The services this service calls, remembered across restarts so the next start can prewarm them.

Every service name the outbound pipeline routes a call to is added to
`<state dir>/<service>.called.json` (state dir `TIDEGATE_STATE_DIR`, default
the user state directory; the pipeline's `on_first_call`); the HTTP prewarm
step opens connections to them before the instance registers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from tidegate.agent.config import state_dir as state_dir  # one definition for every file the agent keeps

log = logging.getLogger("tidegate")


class CalledServices:
    """The service names this service has called, kept on disk across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.names: set[str] = set(self.load())

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [str(name) for name in data] if isinstance(data, list) else []

    def add(self, name: str) -> None:
        if name in self.names:
            return
        with self._lock:
            self.names = self.names | {name} | set(self.load())  # other workers may have added theirs
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
                with os.fdopen(fd, "w") as out:
                    json.dump(sorted(self.names), out)
                os.replace(temp, self.path)
            except OSError as error:
                log.warning("tidegate: could not remember called services in %s: %s", self.path, error)
