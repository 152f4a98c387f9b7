"""`tidegate run` refuses bad settings with a message naming the variable, and execs the program."""

from __future__ import annotations

import os
import subprocess

from tests.support.procs import PYTHON, TIDEGATE
from tidegate.agent.command import BOOTSTRAP_DIR, agent_env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    return subprocess.run([*TIDEGATE, "run", *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


def test_missing_service_is_named() -> None:
    result = _run("--", PYTHON, "-c", "pass")
    assert result.returncode == 2 and "TIDEGATE_SERVICE" in result.stderr


def test_bad_admin_port_from_env_is_named() -> None:
    result = _run("--service", "a", "--", PYTHON, "-c", "pass", env={"TIDEGATE_ADMIN_PORT": "x"})
    assert result.returncode == 2 and "TIDEGATE_ADMIN_PORT" in result.stderr


def test_missing_program() -> None:
    assert "after --" in _run("--service", "a").stderr
    result = _run("--service", "a", "--", "no-such-program-here")
    assert result.returncode == 127 and "no-such-program-here" in result.stderr


def test_program_gets_the_agent_env_and_its_exit_status() -> None:
    probe = "import os, sys; print(os.environ['TIDEGATE_AGENT'], os.environ['TIDEGATE_SERVICE'], os.environ['TIDEGATE_TAG']); sys.exit(3)"
    result = _run("--service", "orders", "--tag", "gray", "--", PYTHON, "-c", probe)
    assert result.returncode == 3
    assert result.stdout.split() == ["1", "orders", "gray"]


def test_bootstrap_goes_first_once() -> None:
    env = agent_env({"PYTHONPATH": os.pathsep.join(["/x", BOOTSTRAP_DIR])}, {"TIDEGATE_SERVICE": "a"})
    assert env["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP_DIR, "/x"]
    assert env["TIDEGATE_AGENT"] == "1"
