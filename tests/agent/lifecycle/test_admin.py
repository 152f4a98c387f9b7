"""The admin endpoint over a real socket: reads are open, writes need the token."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tidegate.agent.lifecycle.admin import AdminServer, bearer_ok


class View:
    def __init__(self) -> None:
        self.is_ready = False

    def ready(self) -> bool:
        return self.is_ready

    def state(self) -> dict[str, Any]:
        return {"state": "SERVING" if self.is_ready else "STARTING", "in_flight": 0}

    def metrics_text(self) -> bytes:
        return b"# HELP x y\n"


@pytest.fixture
def admin() -> Iterator[tuple[str, View]]:
    view = View()
    server = AdminServer(view, token="t0k")
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", view
    finally:
        server.stop()


def test_reads(admin: tuple[str, View]) -> None:
    url, view = admin
    assert httpx.get(f"{url}/live").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 503
    view.is_ready = True
    assert httpx.get(f"{url}/ready").status_code == 200
    assert httpx.get(f"{url}/state").json()["state"] == "SERVING"
    assert httpx.get(f"{url}/metrics").text.startswith("# HELP")
    missing = httpx.get(f"{url}/nope")
    assert missing.status_code == 404 and "/ready" in missing.json()["error"]


def test_writes_need_the_token(admin: tuple[str, View]) -> None:
    url, _ = admin
    logger = logging.getLogger("tidegate")
    before = logger.level
    try:
        assert httpx.post(f"{url}/log-level", json={"level": "DEBUG"}).status_code == 401
        assert httpx.post(f"{url}/log-level", json={"level": "DEBUG"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert logger.level == before
        bad = httpx.post(f"{url}/log-level", content=b"{nope", headers={"Authorization": "Bearer t0k"})
        assert bad.status_code == 400 and "JSON" in bad.json()["error"]
        wrong_level = httpx.post(f"{url}/log-level", json={"level": "LOUD"}, headers={"Authorization": "Bearer t0k"})
        assert wrong_level.status_code == 400 and "'level'" in wrong_level.json()["error"]
        ok = httpx.post(f"{url}/log-level", json={"level": "debug"}, headers={"Authorization": "Bearer t0k"})
        assert ok.status_code == 200 and logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)


def test_writes_refused_without_a_configured_token() -> None:
    server = AdminServer(View(), token="")
    server.start()
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{server.port}/log-level", json={"level": "DEBUG"}, headers={"Authorization": "Bearer anything"}
        )
        assert answer.status_code == 403 and "TIDEGATE_TOKEN" in answer.json()["error"]
    finally:
        server.stop()


def test_bearer_check() -> None:
    assert bearer_ok("Bearer abc", "abc")
    assert bearer_ok("bearer abc", "abc")
    assert not bearer_ok("Bearer abd", "abc")
    assert not bearer_ok("Basic abc", "abc")
    assert not bearer_ok(None, "abc")
    assert not bearer_ok("Bearer ", "")
