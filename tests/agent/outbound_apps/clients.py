"""Shared setup of the outbound tests: real instance servers, a runtime, and one way to call per library."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import requests

from tests.support.procs import PYTHON, Proc, free_port, http_ok, wait_until
from tidegate.agent import offline
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.aiohttp import INSTRUMENTOR as AIOHTTP
from tidegate.agent.instrumentation.httpx import INSTRUMENTOR as HTTPX
from tidegate.agent.instrumentation.requests import INSTRUMENTOR as REQUESTS
from tidegate.agent.outbound.router import OutboundRouter
from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance

APPS = Path(__file__).parent
LIBRARIES = ("httpx", "httpx-async", "requests", "aiohttp")
INSTRUMENTORS = {"httpx": HTTPX, "httpx-async": HTTPX, "requests": REQUESTS, "aiohttp": AIOHTTP}


@dataclass
class Server:
    id: str
    port: int
    proc: Proc

    def instance(self, service: str = "orders") -> Instance:
        return Instance(id=self.id, service=service, host="127.0.0.1", port=self.port)


def start_servers(ids: list[str], logs: Path) -> Iterator[list[Server]]:
    """Start one uvicorn process per id, wait until each answers, stop them all afterwards."""
    servers: list[Server] = []
    try:
        for server_id in ids:
            port = free_port()
            proc = Proc(
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(APPS),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "instance_app:app",
                ],
                logs / f"{server_id}.log",
                env={"INSTANCE_ID": server_id},
            )
            servers.append(Server(server_id, port, proc))
        for server in servers:
            wait_until(lambda: http_ok(f"http://127.0.0.1:{server.port}/ready"), what=f"instance {server.id} up")
        yield servers
    finally:
        for server in servers:
            server.proc.stop()


@dataclass
class Recorder:
    """Stands in for AgentMetrics (another part of the agent): keeps what it is told."""

    calls: list[tuple[str, bool, float]] = field(default_factory=list)

    def observe_outbound(self, service: str, ok: bool, seconds: float) -> None:
        self.calls.append((service, ok, seconds))


def make_runtime(seed: int = 1) -> AgentRuntime:
    runtime = AgentRuntime(config=AgentConfig(service="consumer"))
    runtime.router = OutboundRouter(runtime.directory, rng=random.Random(seed))
    runtime.metrics = Recorder()  # type: ignore[assignment]
    offline.install(runtime)
    return runtime


# -- one way to call per library ---------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


def _decode(status: int, text: str) -> Reply:
    return Reply(status, json.loads(text) if text.startswith("{") else {})


async def _httpx_async(urls: list[str], **kw: Any) -> list[Reply]:
    async with httpx.AsyncClient(trust_env=False, timeout=10, **kw) as client:

        async def one(url: str) -> Reply:
            response = await client.get(url)
            return _decode(response.status_code, response.text)

        return await _in_batches(urls, one)


async def _aiohttp(urls: list[str], **kw: Any) -> list[Reply]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), **kw) as session:

        async def one(url: str) -> Reply:
            async with session.get(url) as response:
                return _decode(response.status, await response.text())

        return await _in_batches(urls, one)


async def _in_batches(urls: list[str], one: Any, size: int = 10) -> list[Reply]:
    replies: list[Reply] = []
    for start in range(0, len(urls), size):
        replies += await asyncio.gather(*(one(url) for url in urls[start : start + size]))
    return replies


def call(library: str, urls: list[str], **client_options: Any) -> list[Reply]:
    """GET each URL with `library` (the async ones ten at a time) and decode the replies."""
    if library == "httpx":
        with httpx.Client(trust_env=False, timeout=10, **client_options) as client:
            return [_decode(r.status_code, r.text) for r in (client.get(url) for url in urls)]
    if library == "httpx-async":
        return asyncio.run(_httpx_async(urls, **client_options))
    if library == "requests":
        with requests.Session() as session:
            session.trust_env = False
            return [_decode(r.status_code, r.text) for r in (session.get(url, timeout=10) for url in urls)]
    if library == "aiohttp":
        return asyncio.run(_aiohttp(urls, **client_options))
    raise ValueError(f"unknown library {library!r}")
