"""Before `tidegate run` execs a program: can the program's Python import tidegate at all?

The agent loads through a `sitecustomize` that imports tidegate, so it loads
only when the program runs on a Python that has tidegate installed. Installed
with pipx, or in another venv than the app's, it is not: the program would run
ungoverned (never registered; its callers fail to find it). `refusal()` finds
the program's interpreter — the program itself when it is a Python, else the
one its `#!` line names (console scripts such as `uvicorn` and `gunicorn` have
one, pip's `/bin/sh` form for long paths included) — and, unless it is the very
Python running `tidegate run`, asks it to import the agent. A program that is
not a Python nor a script with a Python `#!` (a shell script, a binary) is not
checked.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: What the check asks the program's Python (the import the agent's bootstrap makes).
PROBE = "import tidegate, tidegate.agent.boot; print(getattr(tidegate, '__version__', '?'), tidegate.__file__)"
PROBE_TIMEOUT_S = 30.0

_PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
#: pip's launcher for interpreter paths a `#!` line cannot hold: `'''exec' "/path/python" "$0" "$@"`.
_SH_EXEC = re.compile(r"""^'''exec' (.+?) "\$0" "\$@"\s*$""")


def program_interpreter(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The Python that `command` runs on, or None when it is not a Python program (or not found)."""
    program = shutil.which(command[0], path=env.get("PATH")) if command else None
    if program is None:
        return None
    if _PYTHON_NAME.match(Path(program).name):
        return program
    try:
        with open(program, "rb") as script:
            head = script.read(1024)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    lines = head.decode("utf-8", "replace").splitlines()
    words = shlex.split(lines[0][2:].strip()) if lines else []
    if words and Path(words[0]).name in ("sh", "bash") and len(lines) > 1:
        launched = _SH_EXEC.match(lines[1])
        return _python_or_none(shlex.split(launched.group(1))[0], env) if launched else None
    if words and Path(words[0]).name == "env":
        words = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
    return _python_or_none(words[0], env) if words else None


def refusal(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why `command` would run ungoverned (what to install where), or None when its Python imports
    tidegate, or when that cannot be told (not a Python program; the check itself failed)."""
    interpreter = program_interpreter(command, env)
    if interpreter is None or _is_this_python(interpreter):
        return None
    probe_env = {**env, "TIDEGATE_AGENT": "0"}  # the bootstrap stays idle during the probe
    try:
        probe = subprocess.run([interpreter, "-c", PROBE], env=probe_env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no verdict: let the program start, as before
    if probe.returncode == 0:
        return None
    why = (probe.stderr.strip().splitlines() or ["(no error output)"])[-1]
    return (
        f"tidegate run: {command[0]!r} runs on {interpreter}, which cannot import tidegate ({why}),\n"
        "so it would run without the agent: never registered, not governed, and its callers would not find it.\n"
        f"tidegate here is {_this_tidegate()}.\n"
        f"Install tidegate where the program runs:\n    {interpreter} -m pip install {_install_spec()}\n"
        "or start it with that environment's own `tidegate run`, or pass --allow-ungoverned to run it without the agent."
    )


def _python_or_none(name: str, env: Mapping[str, str]) -> str | None:
    found = name if os.sep in name else shutil.which(name, path=env.get("PATH"))
    return found if found is not None and _PYTHON_NAME.match(Path(found).name) else None


def _is_this_python(interpreter: str) -> bool:
    """The Python running `tidegate run`, or another name of it in the same environment
    (`.venv/bin/python3` beside `.venv/bin/python`): it imports tidegate, we are the proof."""
    path = Path(os.path.abspath(interpreter))
    here = Path(os.path.abspath(sys.executable))
    return path == here or (path.parent == here.parent and path.resolve() == here.resolve())


def _this_tidegate() -> str:
    # Where this package is, without importing the root package (the public API, above the agent).
    package = Path(__file__).resolve().parents[1]
    return f"{_distribution_version() or '?'} at {package} (run by {sys.executable})"


def _distribution_version() -> str | None:
    try:
        return importlib.metadata.version("tidegate")
    except importlib.metadata.PackageNotFoundError:
        return None


def _install_spec() -> str:
    """What pip should install: this very source when tidegate came from a local directory, else this version."""
    try:
        distribution = importlib.metadata.distribution("tidegate")
        direct = json.loads(distribution.read_text("direct_url.json") or "null")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        direct = None
    if isinstance(direct, dict) and str(direct.get("url", "")).startswith("file://"):
        path = str(direct["url"])[len("file://") :]
        return f"-e {shlex.quote(path)}" if (direct.get("dir_info") or {}).get("editable") else shlex.quote(path)
    version = _distribution_version()
    return f"tidegate=={version}" if version else "tidegate"
