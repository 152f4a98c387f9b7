"""`tidegate gateway` against nginx (and an aiohttp proxy) in front of the same trivial upstream.

Each proxy is pinned with `taskset` to core 0, the load generator (`wrk`) and the upstream (nginx
`return 200`) to core 1; rounds alternate between the proxies. The figure is requests per proxy
CPU-second (the proxy processes' utime+stime from /proc), since a shared machine rarely gives a proxy
a whole core; wrk's p50/p99 are printed beside it. The gateway runs with one route, one TrafficLane
rule and one flow rule in force (the flow rule's threshold high enough never to refuse).

    python bench/gateway.py [--rounds 3] [--seconds 5] [--connections 64]

Needs Debian's nginx-light and wrk (installed with apt-get when missing). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")

ROUTES = """\
apiVersion: traffic.opensergo.io/v1alpha1
kind: GatewayRoute
metadata: {name: bench}
spec:
  match: {path: {prefix: /}}
  service: upstream
---
apiVersion: traffic.opensergo.io/v1alpha1
kind: TrafficLane
metadata: {name: gray-by-header}
spec:
  lane: {name: gray}
  rules:
    - http: {headers: {x-lane: gray}}
---
apiVersion: fault-tolerance.opensergo.io/v1alpha1
kind: FaultToleranceRule
metadata: {name: bench-limit}
spec:
  targets: [{targetResourceName: route/bench}]
  strategies: [{kind: RateLimitStrategy, spec: {threshold: 10000000, statDurationSeconds: 1}}]
"""

AIOHTTP_PROXY = """\
import sys
import aiohttp
from aiohttp import web
upstream = sys.argv[2]
async def handle(request):
    session = request.app["session"]
    async with session.request(request.method, upstream + request.path_qs, headers={k: v for k, v in request.headers.items() if k.lower() != "host"}, data=await request.read()) as answer:
        return web.Response(status=answer.status, body=await answer.read(), headers={k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "transfer-encoding", "connection")})
async def start(app):
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
async def stop(app):
    await app["session"].close()
app = web.Application()
app.on_startup.append(start)
app.on_cleanup.append(stop)
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(command: str, package: str) -> None:
    if shutil.which(command) or Path(f"/usr/sbin/{command}").exists():
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_conf(directory: Path, port: int, body: str) -> Path:
    conf = directory / f"nginx-{port}.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            daemon off;
            pid {directory}/nginx-{port}.pid;
            error_log {directory}/nginx-{port}.err warn;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              keepalive_requests 1000000;
            {textwrap.indent(body, "  ")}
            }}
            """
        )
    )
    return conf


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and every descendant still alive."""
    total = 0.0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parts = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(parts[1]) == pid:
                pids.append(int(entry.name))
    for one in pids:
        try:
            parts = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(parts[11]) + int(parts[12])) / TICKS
    return total


def wrk(port: int, seconds: float, connections: int) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, requests) from wrk on core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = p50 = p99 = 0.0
    requests = 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif words[:1] == ["50%"]:
            p50 = _ms(words[1])
        elif words[:1] == ["99%"]:
            p99 = _ms(words[1])
        elif "requests in" in line:
            requests = int(words[0])
        elif "Non-2xx" in line:
            raise RuntimeError(f"non-2xx answers: {line}")
    return rps, p50, p99, requests


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    work = Path(tempfile.mkdtemp(prefix="tidegate-bench-gateway-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(work / f"{port}.log", "wb"), start_new_session=True)  # noqa: SIM115
        procs.append(proc)
        wait_port(port)
        return proc

    try:
        upstream_port = free_port()
        upstream_conf = nginx_conf(work, upstream_port, f"server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 'ok'; }} }}")
        start(["taskset", "-c", "1", "nginx", "-c", str(upstream_conf), "-p", str(work)], upstream_port)
        nginx_port = free_port()
        nginx_body = (
            f"upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}\n"
            f"server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; } }'
        )
        proxies: dict[str, subprocess.Popen[bytes]] = {}
        ports: dict[str, int] = {}
        ports["nginx"] = nginx_port
        proxies["nginx"] = start(
            ["taskset", "-c", "0", "nginx", "-c", str(nginx_conf(work, nginx_port, nginx_body)), "-p", str(work)], nginx_port
        )
        routes = work / "routes.yaml"
        routes.write_text(ROUTES)
        gateway_command = [
            PYTHON,
            "-m",
            "tidegate",
            "gateway",
            "--routes",
            str(routes),
            "--upstream",
            f"upstream=127.0.0.1:{upstream_port}",
        ]
        gateway_command += ["--admin-port", "-1", "--log-level", "WARNING"]
        ports["tidegate"] = free_port()
        proxies["tidegate"] = start(["taskset", "-c", "0", *gateway_command, "--port", str(ports["tidegate"])], ports["tidegate"])
        ports["aiohttp"] = free_port()
        script = work / "aiohttp_proxy.py"
        script.write_text(AIOHTTP_PROXY)
        proxies["aiohttp"] = start(
            ["taskset", "-c", "0", PYTHON, str(script), str(ports["aiohttp"]), f"http://127.0.0.1:{upstream_port}"], ports["aiohttp"]
        )
        for port in ports.values():  # warm every proxy and its pool
            wrk(port, 1, args.connections)
        results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in ports}
        for round_ in range(args.rounds):
            for name, port in ports.items():
                seconds = args.seconds if name != "aiohttp" else max(2.0, args.seconds / 2)
                before = cpu_seconds(proxies[name].pid)
                rps, p50, p99, requests = wrk(port, seconds, args.connections)
                cpu = cpu_seconds(proxies[name].pid) - before
                per_core = requests / cpu if cpu > 0 else 0.0
                results[name].append((per_core, rps, p50, p99))
                print(
                    f"round {round_ + 1} {name:9s} {per_core:9.0f} req/s per CPU-s  {rps:9.0f} req/s  cpu {cpu:5.2f}s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
                    flush=True,
                )
        # --workers 2: the same gateway, two workers sharing the port, unpinned (the machine has 2 cores)
        two_port = free_port()
        two = start([*gateway_command, "--port", str(two_port), "--workers", "2"], two_port)
        wrk(two_port, 1, args.connections)
        before = cpu_seconds(two.pid)
        rps2, p50_2, p99_2, requests2 = wrk(two_port, args.seconds, args.connections * 2)
        cpu2 = cpu_seconds(two.pid) - before
        one_rps = statistics.median(r[1] for r in results["tidegate"])
        print(
            f"workers 2 (unpinned, wrk shares the 2 cores): {rps2:.0f} req/s ({rps2 / one_rps:.2f}x one pinned worker's {one_rps:.0f}), "
            f"{requests2 / cpu2 if cpu2 else 0:.0f} req/s per CPU-s, cpu {cpu2:.2f}s, p50 {p50_2:.2f} ms, p99 {p99_2:.2f} ms",
            flush=True,
        )
        summary = {name: (statistics.median(r[0] for r in rows), statistics.median(r[3] for r in rows)) for name, rows in results.items()}
        gateway_per_core, gateway_p99 = summary["tidegate"]
        nginx_per_core, nginx_p99 = summary["nginx"]
        aiohttp_per_core, _ = summary["aiohttp"]
        print(f"medians: tidegate {gateway_per_core:.0f}, nginx {nginx_per_core:.0f}, aiohttp {aiohttp_per_core:.0f} req/s per CPU-s")
        print(
            f"targets: >= 0.6x nginx per core ({gateway_per_core / nginx_per_core:.2f}x), >= 4x aiohttp ({gateway_per_core / aiohttp_per_core:.2f}x)"
        )
        print(
            json.dumps(
                {
                    "gateway_rps_per_core": round(gateway_per_core),
                    "nginx_rps_per_core": round(nginx_per_core),
                    "ratio_vs_nginx": round(gateway_per_core / nginx_per_core, 3),
                    "ratio_vs_aiohttp": round(gateway_per_core / aiohttp_per_core, 3),
                    "p99_ms": gateway_p99,
                    "nginx_p99_ms": nginx_p99,
                    "workers_2_rps": round(rps2),
                    "workers_1_rps": round(one_rps),
                }
            )
        )
        return 0
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
