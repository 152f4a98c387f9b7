"""HTTP prewarm never freezes a callee that runs sync workers.

The callee: a Flask app on gunicorn with two sync workers, each of which waits
for the request of every connection it accepts. The caller restarts with the
callee remembered from its previous life and two requests.Sessions. Before,
the default prewarm opened one idle connection per session to the callee and
sent nothing: both workers waited on them, and the callee answered no one until
gunicorn killed its workers (WORKER TIMEOUT). Now HTTP prewarm is off by
default; switched on, each connection carries a real request whose answer is
read, so no worker waits on it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import ControlPlane, gunicorn, uvicorn
from tests.support.procs import free_port, wait_until

ONLINE_APPS = Path(__file__).resolve().parent / "online_apps"


def _ready(admin: str) -> bool:
    try:
        return httpx.get(f"{admin}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("prewarm", ["default", "on"])
def test_a_restarted_caller_leaves_every_sync_worker_of_its_callee_free(
    control_plane: ControlPlane, start: Any, tmp_path: Path, prewarm: str
) -> None:
    log = tmp_path / "prewarm.log"
    log.touch()
    catalog_port = free_port()
    catalog = start(
        "catalog",
        "catalog",
        gunicorn("sync_catalog:app", "--bind", f"127.0.0.1:{catalog_port}", "--workers", "2", "--timeout", "120"),
        control_plane.url,
        env={"PYTHONPATH": str(ONLINE_APPS), "PREWARM_LOG": str(log)},
    )
    wait_until(lambda: _ready(catalog.admin_url()), what="catalog ready")

    state = tmp_path / "state"
    state.mkdir()
    (state / "front.called.json").write_text(json.dumps(["catalog"]))  # called in its previous life
    env = {"PYTHONPATH": str(ONLINE_APPS), "TIDEGATE_STATE_DIR": str(state)}
    if prewarm == "on":
        env["TIDEGATE_PREWARM_HTTP"] = "on"
    front_port = free_port()
    front = start("front", "front", uvicorn("two_sessions_front:app", "--port", str(front_port)), control_plane.url, env=env)
    wait_until(lambda: _ready(front.admin_url()), what="front ready (its prewarm done)")

    # Four calls at once straight to the callee, then four through the caller: every one answered.
    with ThreadPoolExecutor(4) as pool:
        direct = list(pool.map(lambda _: httpx.get(f"http://127.0.0.1:{catalog_port}/stats", timeout=20).status_code, range(4)))
        through = list(pool.map(lambda _: httpx.get(f"http://127.0.0.1:{front_port}/call", timeout=20).status_code, range(4)))
    assert direct == [200] * 4 and through == [200] * 4
    if prewarm == "on":
        assert log.read_text().split("\n")[:-1] == ["HEAD /", "HEAD /"]  # one answered request per session
        assert "services catalog: 2 connection(s) warmed with HEAD /" in front.proc.output()
    else:
        assert log.read_text() == "" and "http: off" in front.proc.output()


def test_only_sessions_the_apps_own_code_made_are_warmed() -> None:
    """A Session a library creates (an APM agent's, in site-packages) carries none of the app's calls."""
    import os
    import sysconfig

    import requests

    from tests.agent.outbound_apps.clients import make_runtime
    from tidegate.agent.instrumentation.requests import INSTRUMENTOR, SESSIONS

    INSTRUMENTOR.instrument(make_runtime())
    try:
        own = requests.Session()
        vendor_file = os.path.join(sysconfig.get_paths()["purelib"], "apm_vendor", "transport.py")
        namespace: dict[str, Any] = {"__name__": "apm_vendor.transport"}
        exec(compile("import requests\nsession = requests.Session()\n", vendor_file, "exec"), namespace)
        assert own in SESSIONS and namespace["session"] not in SESSIONS
    finally:
        INSTRUMENTOR.uninstrument()
