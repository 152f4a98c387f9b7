"""Metrics ingest: 1,000 instances x 50 resources pushing every 5 s into one control plane.

A real `tidegate control` process; 1,000 instances registered (10 services x 100
instances, 80 base and 20 gray each, leased), each pushing a summary of 50 resources
(the agent's row format, with histograms) every 5 s, spread evenly, from a load
generator in this process (HTTP/1.1 over raw asyncio streams, keep-alive, so the
client is cheap). Meanwhile a chart of the last hour (`GET /v1/metrics`, one
service's rollup, step 10 s) is queried twice a second from another process.

Printed: the control plane's CPU share of one core over the measured window (its
/proc/PID/stat), its RSS at the end, the 1 h chart query's p50/p99. The anchor, in
the same run: the same process answering `GET /v1/health` at the same request rate
(its CPU share), so `cpu_ratio` says what ingest costs over answering as many trivial
requests. Targets (issue 16): <= 25 % of a core, <= 300 MB, p99 <= 50 ms.

Run: `.venv/bin/python bench/metrics_ingest.py [--seconds 30]`. The last line is one
JSON object: {"instances", "resources", "pushes_per_s", "cpu_share", "anchor_cpu_share",
"cpu_ratio", "rss_mb", "query_p50_ms", "query_p99_ms", "series"}.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVICES = 10
PER_SERVICE = 100
GRAY = 20
RESOURCES = 50
INTERVAL_S = 5.0
TOKEN = "bench-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection: request bytes in, (status, body) out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload


def push_body(instance: str, seed: int) -> bytes:
    rows = []
    for r in range(RESOURCES):
        histogram = [0] * 15
        histogram[(r + seed) % 8] = 40
        histogram[9] = 1
        rows.append(["in", f"GET /api/r{r}/{{id}}", 41, {"throttled": 1} if r % 10 == 0 else {}, r % 3, 41, 0.9, histogram])
    return json.dumps({"instance": instance, "interval": INTERVAL_S, "rows": rows}).encode()


async def register_all(port: int, agent_token: str) -> list[tuple[str, str, bytes]]:
    conn = Connection(port)
    out = []
    for s in range(SERVICES):
        for i in range(PER_SERVICE):
            instance = f"svc{s}-{i}"
            lease = secrets.token_urlsafe(32)
            body = {
                "id": instance,
                "service": f"svc{s}",
                "host": "127.0.0.1",
                "port": 10000 + i,
                "tag": "gray" if i < GRAY else "",
                "state": "SERVING",
                "lease_secret": lease,
            }
            status, answer = await conn.call(
                "POST",
                "/v1/instances",
                {"Authorization": f"Bearer {agent_token}", "Content-Type": "application/json"},
                json.dumps(body).encode(),
            )
            assert status == 201, answer
            out.append((instance, lease, push_body(instance, i)))
    return out


async def drive(port: int, agent_token: str, instances: list[tuple[str, str, bytes]], seconds: float, health: bool) -> None:
    """Every instance's push (or, for the anchor, a GET /v1/health) every INTERVAL_S, evenly spread."""
    connections = [Connection(port) for _ in range(16)]
    gap = INTERVAL_S / len(instances)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    queues = [asyncio.Queue[tuple[str, str, bytes] | None]() for _ in connections]

    async def worker(conn: Connection, queue: asyncio.Queue[tuple[str, str, bytes] | None]) -> None:
        while (item := await queue.get()) is not None:
            instance, lease, body = item
            if health:
                status, answer = await conn.call("GET", "/v1/health", {})
            else:
                headers = {"Authorization": f"Bearer {agent_token}", "X-Tidegate-Lease": lease, "Content-Type": "application/json"}
                status, answer = await conn.call("POST", "/v1/metrics", headers, body)
            assert status == 200, answer

    for conn, queue in zip(connections, queues):
        pending.add(asyncio.create_task(worker(conn, queue)))
    n = 0
    while (now := time.monotonic() - start) < seconds:
        due = int(now / gap)
        while n <= due:
            queues[n % len(queues)].put_nowait(instances[n % len(instances)])
            n += 1
        await asyncio.sleep(0.005)
    for queue in queues:
        queue.put_nowait(None)
    await asyncio.gather(*pending)


def query_loop(port: int, read_token: str, stop: Any, out: Any) -> None:
    """In a process of its own (so the load generator's loop does not delay it): a 1 h
    chart twice a second until `stop`; the latencies in ms go to `out`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings: list[float] = []
    while not stop.is_set():
        now = time.time()
        began = time.perf_counter()
        conn.request(
            "GET", f"/v1/metrics?service=svc3&from={now - 3600:.0f}&to={now:.0f}&step=10", headers={"Authorization": f"Bearer {read_token}"}
        )
        answer = conn.getresponse()
        body = answer.read()
        timings.append((time.perf_counter() - began) * 1000)
        assert answer.status == 200 and json.loads(body)["resolution"] == 10, body[:200]
        time.sleep(0.5)
    out.put(timings)


async def measured(
    pid: int, port: int, agent_token: str, read_token: str, instances: list[tuple[str, str, bytes]], seconds: float, health: bool
) -> tuple[float, list[float]]:
    context = multiprocessing.get_context("fork")
    stop, out = context.Event(), context.Queue()
    queries = context.Process(target=query_loop, args=(port, read_token, stop, out)) if not health else None
    if queries is not None:
        queries.start()
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    await drive(port, agent_token, instances, seconds, health)
    share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
    stop.set()
    timings: list[float] = []
    if queries is not None:
        timings = out.get(timeout=60)
        queries.join()
    return share, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured window")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tidegate-bench-metrics-"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate", "control", "--port", str(port), "--data", str(data), "--token", TOKEN, "--instance-ttl", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        agent_token = (data / "tokens" / "agent").read_text().strip()
        read_token = (data / "tokens" / "read").read_text().strip()

        async def run() -> dict[str, object]:
            instances = await register_all(port, agent_token)
            await drive(port, agent_token, instances, INTERVAL_S, health=False)  # every series exists: memory is its full size
            anchor, _ = await measured(proc.pid, port, agent_token, read_token, instances, args.seconds, health=True)
            share, timings = await measured(proc.pid, port, agent_token, read_token, instances, args.seconds, health=False)
            timings.sort()
            series_answer = await Connection(port).call("GET", "/metrics", {"Authorization": f"Bearer {read_token}"})
            series = re.search(rb"tidegate_control_metric_series (\d+)", series_answer[1])
            return {
                "instances": len(instances),
                "resources": RESOURCES,
                "pushes_per_s": len(instances) / INTERVAL_S,
                "cpu_share": round(share, 4),
                "anchor_cpu_share": round(anchor, 4),
                "cpu_ratio": round(share / anchor, 2) if anchor else None,
                "rss_mb": round(rss_mb(proc.pid), 1),
                "query_p50_ms": round(statistics.median(timings), 2),
                "query_p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2),
                "series": int(series.group(1)) if series else None,
            }

        result = asyncio.run(run())
        print(f"anchor: GET /v1/health at {result['pushes_per_s']}/s uses {result['anchor_cpu_share']:.1%} of a core")
        print(
            f"ingest: {result['instances']} instances x {RESOURCES} resources every {INTERVAL_S:.0f} s: "
            f"{result['cpu_share']:.1%} of a core ({result['cpu_ratio']}x the anchor), RSS {result['rss_mb']} MB, "
            f"1 h chart p50 {result['query_p50_ms']} ms p99 {result['query_p99_ms']} ms, {result['series']} series"
        )
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
