"""What watchers that never read cost the control plane (issue 11, finding 7).

Starts a real `tidegate control` process, registers N instances (default 20000;
`--instances 100000` is the finding's scale), then opens W watch streams
(default 20) whose client never reads: each needs a snapshot of the whole
registry. Measures, for a few seconds after, the `GET /v1/health` round trip
and the control plane's resident memory.

Anchor: the same health round trip and memory before the watchers came, in the
same run. The finding, before one snapshot was shared and encoded off the loop:
at 100k instances, health took 35 s and the process grew to 2.1 GiB.

Run: .venv/bin/python bench/watch_snapshot.py [--instances 20000] [--watchers 20] [--seconds 8]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TOKEN = "bench-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def register(url: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
        numbers = iter(range(count))

        async def worker() -> None:
            for n in numbers:
                body = {"service": f"svc{n % 100}", "host": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", "port": 8000}
                response = await http.post("/v1/instances", json={**body, "metadata": {"zone": "eu-west-1a", "version": "1.2.3"}})
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(32)))


def health_round_trips(url: str, seconds: float) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=300) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.perf_counter()
            http.get("/v1/health").raise_for_status()
            times.append(time.perf_counter() - start)
            time.sleep(0.05)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        log = open(Path(data) / "control.log", "w+")
        command = [sys.executable, "-m", "tidegate", "control", "--port", str(port), "--data", data, "--token", TOKEN]
        command += ["--instance-ttl", "3600", "--max-instances", str(max(args.instances, 1)), "--max-services", "1000"]
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        watchers: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 30
            while "listening on" not in Path(log.name).read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"control plane did not start:\n{Path(log.name).read_text()}")
                time.sleep(0.05)
            started = time.perf_counter()
            asyncio.run(register(url, args.instances))
            print(f"registered {args.instances} instances in {time.perf_counter() - started:.1f} s")
            idle = health_round_trips(url, 2.0)
            rss_before = rss_mib(server.pid)
            print(
                f"anchor, no watcher: health p50 {statistics.median(idle) * 1000:.2f} ms, max {max(idle) * 1000:.2f} ms; rss {rss_before:.0f} MiB"
            )
            for _ in range(args.watchers):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(f"GET /v1/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
                watchers.append(sock)
            busy = health_round_trips(url, args.seconds)
            rss_after = rss_mib(server.pid)
            print(
                f"{args.watchers} watchers that never read: health p50 {statistics.median(busy) * 1000:.2f} ms, "
                f"max {max(busy) * 1000:.2f} ms; rss {rss_after:.0f} MiB"
            )
            figures = {
                "instances": args.instances,
                "watchers": args.watchers,
                "health_idle_p50_ms": round(statistics.median(idle) * 1000, 2),
                "health_p50_ms": round(statistics.median(busy) * 1000, 2),
                "health_max_ms": round(max(busy) * 1000, 2),
                "rss_before_mib": round(rss_before),
                "rss_after_mib": round(rss_after),
            }
            print(json.dumps(figures))
        finally:
            for sock in watchers:
                sock.close()
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
