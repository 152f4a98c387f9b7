"""`tidegate run` hands the program its token only as a file path: neither the program's
environment nor that of a process it starts holds the token itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import PYTHON, TIDEGATE

TOKEN = "tg_run_token_0123456789abcdef"

#: The program: what it and a subprocess it starts see of the token.
PROBE = """
import json, os, subprocess, sys
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('TIDEGATE_TOKEN'))"], capture_output=True, text=True)
path = os.environ.get("TIDEGATE_TOKEN_FILE")
print(json.dumps({
    "own": os.environ.get("TIDEGATE_TOKEN"),
    "child": child.stdout.strip(),
    "file": path,
    "content": open(path).read().strip() if path else None,
    "mode": os.stat(path).st_mode & 0o777 if path else None,
}))
"""


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    return subprocess.run(
        [*TIDEGATE, "run", "--service", "reports", "--control", "http://127.0.0.1:9", *args, "--", PYTHON, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "TIDEGATE_LOSSLESS": "off", **(env or {})},
    )


def _seen(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["--token", "TIDEGATE_TOKEN"])
def test_a_token_given_in_clear_reaches_the_program_only_as_a_file_it_removes_at_exit(how: str) -> None:
    result = _run("--token", TOKEN) if how == "--token" else _run(env={"TIDEGATE_TOKEN": TOKEN})
    seen = _seen(result)
    assert seen["own"] is None and seen["child"] == "None", "no TIDEGATE_TOKEN in the program's or its subprocess's environment"
    assert seen["content"] == TOKEN and seen["mode"] == 0o600
    assert not Path(str(seen["file"])).exists(), "the temporary token file is removed when the program exits"
    assert ("ps" if how == "--token" else "child process") in result.stderr, "a token in clear is warned about"
    assert TOKEN not in result.stderr


def test_a_token_file_is_passed_as_its_path(tmp_path: Path) -> None:
    path = tmp_path / "agent-token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o600)
    seen = _seen(_run("--token-file", str(path)))
    assert (seen["own"], seen["child"], seen["file"], seen["content"]) == (None, "None", str(path), TOKEN)
    assert path.exists(), "a file the operator gave stays"


@pytest.mark.parametrize(("args", "named"), [(["--token", "short"], "--token"), (["--token-file", "/nonexistent/token"], "--token-file")])
def test_a_bad_token_stops_run_with_a_message(args: list[str], named: str) -> None:
    result = _run(*args)
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr
