"""`tidegate run` stops before the exec when the program's Python cannot import tidegate.

A second venv without tidegate stands in for an app whose environment is not
the one tidegate was installed in (pipx, another venv): its Python, a console
script of it (`#!` to its Python) and pip's `/bin/sh` launcher form are all
refused with what to install where; `--allow-ungoverned` starts them anyway.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import PYTHON, TIDEGATE
from tidegate.agent.interpreter import program_interpreter


@pytest.fixture(scope="module")
def other_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with no tidegate in it (and no pip: nothing is installed there)."""
    root = tmp_path_factory.mktemp("other") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    yield root


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run(*command: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_") and k != "PYTHONPATH"}
    flags = ["--allow-ungoverned"] if allow else []
    return subprocess.run(
        [*TIDEGATE, "run", "--service", "reports", *flags, "--", *command], capture_output=True, text=True, timeout=120, env=clean
    )


def test_a_python_without_tidegate_is_refused_with_what_to_install_where(other_venv: Path) -> None:
    python = str(other_venv / "bin" / "python")
    result = _run(python, "-c", "print('ran')")
    assert result.returncode == 2, result
    assert "ran" not in result.stdout
    assert f"runs on {python}, which cannot import tidegate" in result.stderr
    assert f"{python} -m pip install " in result.stderr  # what to install, and where
    assert "--allow-ungoverned" in result.stderr


def test_a_console_script_of_that_venv_is_refused_too(other_venv: Path, tmp_path: Path) -> None:
    python = str(other_venv / "bin" / "python")
    server = _script(other_venv / "bin" / "myserver", f"#!{python}\nprint('ran')\n")
    long_path = _script(
        tmp_path / "long-path-server", f"#!/bin/sh\n'''exec' {python} \"$0\" \"$@\"\n' '''\nprint('ran')\n"
    )  # pip's launcher when the interpreter's path is too long for a `#!` line
    for program in (server, long_path):
        result = _run(str(program))
        assert result.returncode == 2 and "ran" not in result.stdout, result
        assert f"runs on {python}, which cannot import tidegate" in result.stderr


def test_allow_ungoverned_starts_it_anyway_with_a_warning(other_venv: Path) -> None:
    result = _run(str(other_venv / "bin" / "python"), "-c", "print('ran')", allow=True)
    assert result.returncode == 0 and result.stdout.strip() == "ran", result
    warning, notice = result.stderr.strip().splitlines()  # tidegate run's, then the bootstrap's: no traceback
    assert warning.endswith("(--allow-ungoverned: starting it without the agent)")
    assert "cannot import tidegate; the program runs without it" in notice


def test_programs_on_this_python_and_programs_that_are_not_python_start_unchecked(tmp_path: Path) -> None:
    assert _run(PYTHON, "-c", "print('ran')").stdout.strip() == "ran"
    shell = _script(tmp_path / "job.sh", "#!/bin/sh\necho ran\n")
    assert _run(str(shell)).stdout.strip() == "ran"


def test_the_interpreter_of_a_program_is_found_by_name_path_or_shebang(other_venv: Path, tmp_path: Path) -> None:
    env = {"PATH": f"{other_venv / 'bin'}{os.pathsep}/usr/bin:/bin"}
    python = str(other_venv / "bin" / "python")
    assert program_interpreter(["python", "app.py"], env) == python
    assert program_interpreter([python, "-m", "uvicorn"], env) == python
    by_env = _script(tmp_path / "by-env", "#!/usr/bin/env -S python -u\n")
    assert program_interpreter([str(by_env)], env) == python
    assert program_interpreter([str(_script(tmp_path / "node-tool", "#!/usr/bin/env node\n"))], env) is None
    assert program_interpreter(["no-such-program"], env) is None
