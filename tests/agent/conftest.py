"""Fixtures for the agent's tests: a real control plane, and apps started under `tidegate run`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import BIN, TIDEGATE, Proc, free_port, wait_until

APPS = Path(__file__).resolve().parent / "apps"
TOKEN = "agent-test-token"
TTL_S = 2


class ControlPlane:
    def __init__(self, tmp: Path, port: int | None = None) -> None:
        if os.environ.get("TIDEGATE_TEST_CONTROL_PLANE") == "0":
            pytest.skip("no control plane in this venv (the oldest-versions run: its Starlette is not tidegate's)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [
                *TIDEGATE,
                "control",
                "--port",
                str(self.port),
                "--data",
                str(tmp / f"control-{self.port}"),
                "--token",
                TOKEN,
                "--instance-ttl",
                str(TTL_S),
            ],
            tmp / f"control-{self.port}.log",
        )
        wait_until(lambda: "listening on" in self.proc.output(), what="control plane to listen")

    def instances(self, service: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json())


class Agented:
    """A program started under `tidegate run`."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        service: str,
        command: Sequence[str],
        control_url: str,
        tag: str = "",
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.log = tmp / f"{name}.log"
        run = [*TIDEGATE, "run", "--service", service, "--control", control_url, "--token", TOKEN]
        if tag:
            run += ["--tag", tag]
        self.proc = Proc(
            [*wrap, *run, "--", *command],
            self.log,
            env={"TIDEGATE_HEARTBEAT_INTERVAL": "0.3", "TIDEGATE_LOG_LEVEL": "DEBUG", **(env or {})},
            cwd=APPS,
        )

    def admin_url(self) -> str:
        found = wait_until(
            lambda: re.search(r"admin endpoint on (http://127\.0\.0\.1:\d+)", self.proc.output()), what=f"{self.service}'s admin endpoint"
        )
        return found.group(1)  # type: ignore[union-attr]

    def fail_report(self) -> str:
        return f"--- {self.log.name}\n{self.proc.output()[-4000:]}"


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path)
    try:
        yield plane
    finally:
        plane.proc.stop()


@pytest.fixture
def start(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`start(name, service, command, control_url, ...)` -> Agented, stopped at the end of the test."""
    started: list[Agented] = []

    def _start(*args: Any, **kwargs: Any) -> Agented:
        program = Agented(tmp_path, *args, **kwargs)
        started.append(program)
        return program

    try:
        yield _start
    finally:
        report = getattr(request.node, "rep_call", None)
        for program in started:
            if report is None or report.failed:
                print(program.fail_report())
            program.proc.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def uvicorn(*args: str) -> list[str]:
    return [str(BIN / "uvicorn"), *args, "--host", "127.0.0.1"]


def gunicorn(*args: str) -> list[str]:
    return [str(BIN / "gunicorn"), *args]


PYTHON_APP = str(BIN / "python")
