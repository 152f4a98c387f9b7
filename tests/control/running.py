"""A real `tidegate control` process for tests, on a free loopback port."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.procs import TIDEGATE, Proc, free_port, wait_until

TOKEN = "test-token-0123456789"


class ControlProcess:
    """`python -m tidegate control` with its own data dir; `url` once listening."""

    def __init__(
        self, data: Path, log: Path, ttl: float = 2.0, token: str | None = TOKEN, port: int | None = None, extra: list[str] | None = None
    ) -> None:
        self.data = data
        self.port = port or free_port()
        args = [*TIDEGATE, "control", "--port", str(self.port), "--data", str(data), "--instance-ttl", str(ttl)]
        if token:
            args += ["--token", token]
        self.proc = Proc(args + (extra or []), log, env={"TIDEGATE_TOKEN": ""})
        try:
            wait_until(lambda: "listening on" in self.proc.output() or not self.proc.alive(), timeout=30, what="control plane start")
            if not self.proc.alive():
                raise RuntimeError(f"control plane exited:\n{self.proc.output()}")
            match = re.search(r"listening on (https?://\S+)", self.proc.output())
            assert match, self.proc.output()
            self.url = match.group(1)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()
