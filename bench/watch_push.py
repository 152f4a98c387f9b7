"""How fast a change reaches every watcher of the control plane's watch stream.

Starts a real `tidegate control` process, opens N Server-Sent-Events watchers
(N = 10, 100, 1000) from this process (asyncio + aiohttp), registers instances
one at a time and measures, for every watcher, the time from the moment the
register request is sent to the moment the watcher has the instance's frame.

Anchor: a plain HTTP round trip (GET /v1/health) to the same server, measured
in the same run. Both include this process's own asyncio loop, which also
reads the N streams, so the ratio is the honest figure to compare.

Run: .venv/bin/python bench/watch_push.py [--rounds 20]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

TOKEN = "bench-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIZES = (10, 100, 1000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Watchers:
    """N open watch streams, each noting when it saw each instance arrive."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self._tasks: list[asyncio.Task[None]] = []
        self.synced = 0
        self.arrivals: dict[str, list[float]] = {}
        self._waiting: dict[str, tuple[int, asyncio.Event]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def grow_to(self, n: int) -> None:
        while len(self._tasks) < n:
            self._tasks.append(asyncio.create_task(self._watch()))
        while self.synced < n:
            await asyncio.sleep(0.01)

    def expect(self, instance_id: str) -> asyncio.Event:
        done = asyncio.Event()
        self.arrivals[instance_id] = []
        self._waiting[instance_id] = (len(self._tasks), done)
        return done

    async def _watch(self) -> None:
        async with self._session.get(f"{self._url}/v1/watch", headers=AUTH, timeout=aiohttp.ClientTimeout(total=None)) as response:
            event = b""
            async for line in response.content:
                if line.startswith(b"event: "):
                    event = line[7:].strip()
                elif line.startswith(b"data: "):
                    if event == b"snapshot":
                        self.synced += 1
                    elif event == b"instance":
                        now = time.perf_counter()
                        data = json.loads(line[6:])
                        if data["op"] == "put":
                            self._arrived(data["instance"]["id"], now)

    def _arrived(self, instance_id: str, now: float) -> None:
        seen = self.arrivals.get(instance_id)
        if seen is None:
            return
        seen.append(now)
        expected, done = self._waiting[instance_id]
        if len(seen) >= expected:
            done.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def anchor(session: aiohttp.ClientSession, url: str, count: int = 300) -> list[float]:
    """GET /v1/health round trips, in ms."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        async with session.get(f"{url}/v1/health") as response:
            await response.read()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def push_round(session: aiohttp.ClientSession, url: str, watchers: Watchers, n: int, index: int) -> list[float]:
    """Register one instance; the ms from send to arrival at each watcher."""
    instance_id = f"bench-{n}-{index}"
    done = watchers.expect(instance_id)
    body = {"id": instance_id, "service": "bench", "host": "127.0.0.1", "port": 10000 + index}
    sent = time.perf_counter()
    async with session.post(f"{url}/v1/instances", json=body, headers=AUTH) as response:
        if response.status != 201:
            raise RuntimeError(f"register refused: {response.status} {await response.text()}")
    await asyncio.wait_for(done.wait(), timeout=60)
    return [(arrived - sent) * 1000 for arrived in watchers.arrivals.pop(instance_id)]


async def run(url: str, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await anchor(session, url, 50)  # warm the connection and the server
        rtt = await anchor(session, url)
        figures["anchor_http_rtt_p50_ms"] = round(statistics.median(rtt), 3)
        figures["anchor_http_rtt_p99_ms"] = round(percentile(rtt, 0.99), 3)
        print(
            f"anchor: GET /v1/health round trip p50 {figures['anchor_http_rtt_p50_ms']:.3f} ms, p99 {figures['anchor_http_rtt_p99_ms']:.3f} ms"
        )
        watchers = Watchers(session, url)
        try:
            for n in SIZES:
                await watchers.grow_to(n)
                latencies: list[float] = []
                for index in range(rounds):
                    latencies += await push_round(session, url, watchers, n, index)
                p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
                figures[f"p50_ms_{n}"] = round(p50, 3)
                figures[f"p99_ms_{n}"] = round(p99, 3)
                figures[f"p50_ratio_to_anchor_{n}"] = round(p50 / figures["anchor_http_rtt_p50_ms"], 2)
                print(
                    f"N={n:5d} watchers: push p50 {p50:8.3f} ms, p99 {p99:8.3f} ms "
                    f"({len(latencies)} arrivals; p50 = {figures[f'p50_ratio_to_anchor_{n}']}x the HTTP round trip)"
                )
        finally:
            await watchers.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="instances registered per N (default 20)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(SIZES) * 2 + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-") as data:
        log = open(Path(data) / "control.log", "w+")
        server = subprocess.Popen(
            [sys.executable, "-m", "tidegate", "control", "--port", str(port), "--data", data, "--token", TOKEN],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while not re.search(r"listening on", Path(log.name).read_text()):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"control plane did not start:\n{Path(log.name).read_text()}")
                time.sleep(0.05)
            figures = asyncio.run(run(f"http://127.0.0.1:{port}", args.rounds))
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
