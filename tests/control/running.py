"""A real `tidegate control` process for tests, on a free loopback port."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.procs import TIDEGATE, Proc, free_port, wait_until

TOKEN = "test-token-0123456789"

#: A valid rule document with one field to vary (`SETTINGS.format(window=30)`), or to break (`window="later"`).
SETTINGS = """\
apiVersion: tidegate.io/v1
kind: ServiceSettings
metadata:
  name: orders
spec:
  service: orders
  warmupWindowSeconds: {window}
"""


def tidegate_cli(
    url: str, *args: str, stdin: str | None = None, token: str = TOKEN, columns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A real `tidegate` command against the control plane at `url`: stdout a pipe, COLUMNS unset unless given."""
    env = {"TIDEGATE_CONTROL": url, "TIDEGATE_TOKEN": token, "PATH": "/usr/bin:/bin", **({"COLUMNS": columns} if columns else {})}
    return subprocess.run([*TIDEGATE, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


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
