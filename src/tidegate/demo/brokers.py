"""What the demo's message-queue scene needs from the machine: a `redis-server`,
installed from Debian's package when it is missing (the README's first command
shows every capability on a fresh machine).

Only with apt-get and as root, quietly, after an `apt-get update`; otherwise
(or with `tidegate demo --no-install`) a message says what to install, and the
scene runs without its stream part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

PACKAGE = "redis-server"
APT_TIMEOUT = 600.0


def redis_server(
    console: Console,
    install: bool = True,
    path: str | None = None,
    is_root: Callable[[], bool] = lambda: os.geteuid() == 0,
) -> str | None:
    """The path of a `redis-server`, installing it when missing and possible; None (said why) otherwise.

    `path` is the search path (default $PATH)."""
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    skipped = "the lanes scene's orders stream (Redis Streams consumed by base and gray billing) is skipped"
    if not install:
        console.print(f"[yellow]redis-server is not on PATH (--no-install): {skipped}[/]")
        return None
    apt = shutil.which("apt-get", path=path)
    if apt is None:
        console.print(
            f"[yellow]redis-server is not on PATH and apt-get is not available to install it: {skipped}.\n"
            "Install Redis >= 7 with this machine's package manager (it must put redis-server on PATH), then run the demo again.[/]"
        )
        return None
    if not is_root():
        console.print(
            f"[yellow]redis-server is not on PATH, and installing it needs root: {skipped}.\n"
            f"Run `sudo apt-get install -y {PACKAGE}`, or the demo as root, to see it.[/]"
        )
        return None
    console.print(f"installing redis-server for the lanes scene's message queue: apt-get update, apt-get install {PACKAGE} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            console.print(f"[yellow]`apt-get {' '.join(step[1:])}` failed ({escape(str(error))}): {skipped}[/]")
            return None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            console.print(f"[yellow]`apt-get {' '.join(step[1:])}` failed (exit {done.returncode}): {skipped}[/]")
            if tail:
                console.print(tail, markup=False, highlight=False)
            return None
    found = shutil.which("redis-server", path=path)
    if found is None:
        console.print(f"[yellow]{PACKAGE} installed, but redis-server is still not on PATH: {skipped}[/]")
        return None
    console.print(f"[green]✓[/] installed {escape(found)}")
    return found
