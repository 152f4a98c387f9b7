"""The agent's lossless-offline parts in one process: notices and ejection on a real directory,
settings, notice validation, and dropping idle connections from real httpx, requests and aiohttp pools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from tests.support.clock import FakeClock
from tidegate.agent.config import AgentConfig
from tidegate.agent.offline import pools
from tidegate.agent.offline.drain import LosslessError, LosslessOffline, install, settings_from_env
from tidegate.agent.offline.notices import DrainNotices
from tidegate.agent.outbound.call import OutboundPipeline
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.directory import ServiceDirectory
from tidegate.core.drain import DrainSettings
from tidegate.core.instance import Instance


def _directory() -> ServiceDirectory:
    directory = ServiceDirectory()
    directory.replace(1, [Instance("a", "orders", "127.0.0.1", 8001), Instance("b", "orders", "127.0.0.1", 8002)])
    return directory


def _routable(directory: ServiceDirectory) -> set[str]:
    return {i.id for i in directory.routable("orders")}


def test_a_notice_takes_the_instance_out_at_once_and_asks_clients_to_drop_connections() -> None:
    directory = _directory()
    notices = DrainNotices(directory, FakeClock(100.0))
    assert notices.notice("a", "127.0.0.1:8001", "direct notice")
    assert not notices.notice("a", "127.0.0.1:8001", "response header")  # the first channel won
    assert _routable(directory) == {"b"}
    assert notices.is_draining("127.0.0.1", 8001) and not notices.is_draining("127.0.0.1", 8002)
    assert notices.drop_sequence == 1 and notices.drops_since(0) == [("127.0.0.1", 8001)] and notices.drops_since(1) == []


def test_a_notice_by_address_alone_finds_the_instance() -> None:
    directory = _directory()
    DrainNotices(directory, FakeClock(100.0)).notice("", "127.0.0.1:8002", "response header")
    assert _routable(directory) == {"a"}


def test_passive_ejection_lets_the_instance_back_after_the_backoff_but_not_a_draining_one() -> None:
    directory, clock = _directory(), FakeClock(100.0)
    notices = DrainNotices(directory, clock)
    notices.connect_failed("a")
    notices.connect_failed("b")
    assert _routable(directory) == set()
    notices.notice("b", "127.0.0.1:8002", "direct notice")
    clock.now += 0.5
    notices.recheck_due()
    assert _routable(directory) == set()
    clock.now += 0.5  # the 1 s backoff is over: a is re-checked by the next call; b drains, it stays out
    notices.recheck_due()
    assert _routable(directory) == {"a"}


def test_settings_name_the_bad_variable() -> None:
    assert settings_from_env({}) == (True, DrainSettings(timeout_s=20.0, settle_s=1.0))
    assert settings_from_env({"TIDEGATE_LOSSLESS": "off", "TIDEGATE_DRAIN_TIMEOUT": "0.5"}) == (False, DrainSettings(0.5, 0.5))
    with pytest.raises(LosslessError, match="TIDEGATE_LOSSLESS"):
        settings_from_env({"TIDEGATE_LOSSLESS": "maybe"})
    with pytest.raises(LosslessError, match="TIDEGATE_DRAIN_TIMEOUT"):
        settings_from_env({"TIDEGATE_DRAIN_TIMEOUT": "soon"})
    with pytest.raises(LosslessError, match="TIDEGATE_DRAIN_TIMEOUT"):
        settings_from_env({"TIDEGATE_DRAIN_TIMEOUT": "-3"})


def test_a_bad_setting_is_logged_and_leaves_lossless_off(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TIDEGATE_DRAIN_TIMEOUT", "never")
    assert install(AgentRuntime(config=AgentConfig(service="orders"))) is None
    assert "TIDEGATE_DRAIN_TIMEOUT" in caplog.text


@pytest.mark.parametrize(
    "body, field",
    [
        (None, "JSON object"),
        ({"instance": "a"}, "address"),
        ({"instance": 3, "address": "h:1"}, "instance"),
        ({"instance": "a", "address": "nohostport"}, "address"),
    ],
)
def test_a_malformed_drain_notice_is_refused_naming_the_field(body: Any, field: str) -> None:
    runtime = AgentRuntime(config=AgentConfig(service="checkout"), directory=_directory())
    status, answer = LosslessOffline(runtime, DrainSettings()).receive_notice(body)
    assert status == 400 and field in answer["error"]
    assert _routable(runtime.directory) == {"a", "b"}  # nothing changed


# -- pools: real clients, a real keep-alive server ------------------------------------------------


class _KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_httpx_idle_connections_to_the_address_are_dropped(server: tuple[str, int]) -> None:
    host, port = server
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"http://{host}:{port}/").status_code == 200
        assert len(client._transport._pool.connections) == 1  # type: ignore[attr-defined]
        pools.drop_httpx(client, [(host, port + 1)])
        assert len(client._transport._pool.connections) == 1  # type: ignore[attr-defined]
        pools.drop_httpx(client, [(host, port)])
        assert client._transport._pool.connections == []  # type: ignore[attr-defined]
        assert client.get(f"http://{host}:{port}/").status_code == 200  # a new connection when asked


def test_httpx_async_idle_connections_are_dropped(server: tuple[str, int]) -> None:
    host, port = server

    async def run() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"http://{host}:{port}/")).status_code == 200
            pools.drop_httpx_async(client, [(host, port)])
            assert client._transport._pool.connections == []  # type: ignore[attr-defined]
            await asyncio.sleep(0)  # the close task runs

    asyncio.run(run())


def test_requests_pool_for_the_address_is_dropped(server: tuple[str, int]) -> None:
    host, port = server
    with requests.Session() as session:
        session.trust_env = False
        assert session.get(f"http://{host}:{port}/").status_code == 200
        manager = session.get_adapter("http://").poolmanager  # type: ignore[attr-defined]
        assert len(manager.pools) == 1
        pools.drop_requests(session, [(host, port)])
        assert len(manager.pools) == 0
        assert session.get(f"http://{host}:{port}/").status_code == 200


def test_aiohttp_idle_connections_to_the_address_are_dropped(server: tuple[str, int]) -> None:
    host, port = server

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/") as response:
                await response.read()
            assert sum(len(c) for c in session.connector._conns.values()) == 1  # type: ignore[union-attr]
            pools.drop_aiohttp(session, [(host, port)])
            assert sum(len(c) for c in session.connector._conns.values()) == 0  # type: ignore[union-attr]

    asyncio.run(run())


def test_each_client_acts_once_per_notice() -> None:
    directory = ServiceDirectory()
    notices = DrainNotices(directory)
    pipeline = OutboundPipeline(OutboundRouter(directory), drains=notices)
    client = httpx.Client()
    try:
        notices.notice("", "10.0.0.1:9001", "test")
        notices.notice("", "10.0.0.1:9002", "test")
        assert list(pipeline.stale_addresses(client)) == [("10.0.0.1", 9001), ("10.0.0.1", 9002)]
        assert list(pipeline.stale_addresses(client)) == []
        notices.notice("", "10.0.0.1:9003", "test")
        assert list(pipeline.stale_addresses(client)) == [("10.0.0.1", 9003)]
    finally:
        client.close()


def test_a_worker_that_exited_but_was_not_reaped_counts_as_gone() -> None:
    import os
    import time

    from tidegate.agent.forking import process_alive as _alive  # the one the drain board and the metrics files share

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:  # a zombie until we wait for it below
            time.sleep(0.01)
        assert not _alive(pid)
        assert _alive(os.getpid())
        assert not _alive(0) and not _alive(-1)  # 0 would signal the process group: never alive
    finally:
        os.waitpid(pid, 0)
