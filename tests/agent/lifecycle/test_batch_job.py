"""`tidegate run` around a process that is not a server (a batch job, a cron script, a CLI tool) routes by name.

Nothing in it listens, so no server hook starts its directory watch: its first
call to a host the directory does not know does, and waits (bounded) for the
first sync, so that very call goes to a live instance. It registers nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.agent.conftest import PYTHON_APP, uvicorn
from tests.support.procs import free_port, wait_until

JOB = str(Path(__file__).resolve().parent / "job_apps" / "report_job.py")


def test_a_batch_job_calls_a_service_by_name_with_httpx_requests_and_aiohttp(control_plane: Any, start: Any) -> None:
    port = free_port()
    start("items", "items", uvicorn("starlette_app:app", "--port", str(port)), control_plane.url)
    wait_until(lambda: [i["port"] for i in control_plane.instances("items")] == [port], what="items to register")

    job = start("reports", "reports", [PYTHON_APP, JOB], control_plane.url)
    assert job.proc.wait(timeout=60) == 0, job.fail_report()
    answers = json.loads([line for line in job.proc.output().splitlines() if line.startswith("{")][-1])
    assert answers == {
        "httpx": {"item": "1"},
        "requests": {"item": "2"},
        "httpx_async": {"item": "3"},
        "aiohttp": {"item": "4"},
    }, job.fail_report()
    assert control_plane.instances("reports") == []  # it serves nothing: nothing registered
    assert "admin endpoint" not in job.proc.output()


def test_a_batch_job_whose_control_plane_is_down_fails_its_calls_after_one_bounded_wait(start: Any) -> None:
    job = start("lonely", "reports", [PYTHON_APP, JOB], f"http://127.0.0.1:{free_port()}")
    assert job.proc.wait(timeout=60) == 1, job.fail_report()
    output = job.proc.output()
    answers = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    assert all("error" in answer for answer in answers.values()), answers  # `items` is no host anyone knows
    assert output.count("no instance directory yet") == 1, job.fail_report()  # waited once, not per call
