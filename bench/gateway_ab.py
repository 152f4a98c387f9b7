"""The gateway against an earlier version of itself: req/s per proxy CPU-second, rounds interleaved.

The proof of each optimisation: the working tree's gateway and the one at `--ref` (exported with
`git archive`, run with its own `src` first on PYTHONPATH) in front of the same nginx `return 200`
upstream, the same routes as bench/gateway.py (one route, one TrafficLane rule, one flow rule),
each pinned to core 0, wrk on core 1, rounds alternating so the shared machine's noise hits both.

    python bench/gateway_ab.py --ref HEAD~1 [--rounds 5] [--seconds 3] [--connections 64]

Last line: JSON with both medians and the ratio (new / old).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import PYTHON, ROUTES, cpu_seconds, free_port, need, nginx_conf, wait_port, wrk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    work = Path(tempfile.mkdtemp(prefix="tidegate-bench-ab-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        old = work / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)

        def start(command: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
            log = open(work / f"{port}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, env=env)
            procs.append(proc)
            wait_port(port)
            return proc

        upstream_port = free_port()
        conf = nginx_conf(work, upstream_port, f"server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 'ok'; }} }}")
        start(["taskset", "-c", "1", "nginx", "-c", str(conf), "-p", str(work)], upstream_port)
        routes = work / "routes.yaml"
        routes.write_text(ROUTES)
        command = [PYTHON, "-m", "tidegate", "gateway", "--routes", str(routes), "--upstream", f"upstream=127.0.0.1:{upstream_port}"]
        command += ["--admin-port", "-1", "--log-level", "WARNING"]
        ports = {"new": free_port(), "old": free_port()}
        envs = {"new": dict(os.environ), "old": {**os.environ, "PYTHONPATH": str(old / "src")}}
        proxies = {name: start(["taskset", "-c", "0", *command, "--port", str(port)], port, envs[name]) for name, port in ports.items()}
        for port in ports.values():
            wrk(port, 1, args.connections)
        results: dict[str, list[float]] = {name: [] for name in ports}
        for round_ in range(args.rounds):
            order = list(ports) if round_ % 2 == 0 else list(reversed(ports))
            for name in order:
                before = cpu_seconds(proxies[name].pid)
                rps, p50, p99, requests = wrk(ports[name], args.seconds, args.connections)
                cpu = cpu_seconds(proxies[name].pid) - before
                per_core = requests / cpu if cpu > 0 else 0.0
                results[name].append(per_core)
                print(
                    f"round {round_ + 1} {name} ({args.ref if name == 'old' else 'tree'}): {per_core:8.0f} req/s per CPU-s  {rps:8.0f} req/s  p99 {p99:6.2f} ms",
                    flush=True,
                )
        new = statistics.median(results["new"])
        old_median = statistics.median(results["old"])
        print(
            json.dumps(
                {
                    "ref": args.ref,
                    "new_rps_per_core": round(new),
                    "old_rps_per_core": round(old_median),
                    "ratio": round(new / old_median, 3),
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
