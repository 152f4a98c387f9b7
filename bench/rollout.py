"""`tidegate rollout` with real processes under open-loop load: promoted when healthy, aborted when not.

Setup (all on 127.0.0.1, every service under `tidegate run`, agents pushing metrics
every second): a control plane, `orders` v1 (base) and v2 (tag v2), and a `front`
whose handler calls `http://orders/who` through its agent, so the rollout's
canary share decides which version answers. Open-loop load (RATE req/s) goes to
`front`; every answer that is not 200 is a failure. Four cases, each on a fresh
set of processes, steps 20, 50, 100 of INTERVAL seconds, minRequests 20:
  (a) v2 healthy: promoted step by step, the old instance drained;
  (b) v2 answers 500 to 3% of requests: aborted at a judged step;
  (c) v2 adds 80 ms to every request: aborted on the relative p99 gate;
  (d) almost no traffic (2 req/s): inconclusive, extended, never passed.
The anchor is case (a)'s own failures: what the rollout's actions cost (0 is the bar).
Run: `.venv/bin/python bench/rollout.py` (about 2 minutes on 2 cores); `--rate`, `--interval`.
The last line is one JSON object: {"healthy_promoted", "failed_during_promotion",
"errors_case_aborted_at_step", "latency_case_aborted", "failed_gray_before_abort", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Proc, free_port, open_loop, wait  # noqa: E402
from tidegate.control.storage import new_token  # noqa: E402

PYTHON = sys.executable

ORDERS = """
import asyncio, json, os, random
VERSION, ERRORS, DELAY = os.environ["BENCH_VERSION"], float(os.environ["BENCH_ERRORS"]), float(os.environ["BENCH_DELAY_MS"]) / 1000
draw = random.Random(17)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if DELAY:
        await asyncio.sleep(DELAY)
    status = 500 if draw.random() < ERRORS else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"version": VERSION}).encode()})
"""

FRONT = """
import json
import httpx

client = None


async def app(scope, receive, send):
    global client
    if scope["type"] != "http":
        return
    if client is None:
        client = httpx.AsyncClient(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=400))
    try:
        response = await client.get("http://orders/who")
        version = response.json().get("version", "?")
        status, body = (200, {"version": version}) if response.status_code == 200 else (502, {"error": f"{version} {response.status_code}"})
    except Exception as error:
        status, body = 502, {"error": f"{type(error).__name__}: {error}"}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
"""


@dataclass
class Load:
    sent: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def on_sent(self) -> str:
        self.sent += 1
        return ""

    def on_failed(self, key: str, reason: str) -> None:
        self.failures[reason] += 1


class Case:
    """One set of processes: a control plane, orders v1 and v2, front."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir()
        (self.workdir / "bench_orders.py").write_text(ORDERS)
        (self.workdir / "bench_front.py").write_text(FRONT)
        self.token = new_token()
        self.processes: list[Proc] = []
        self.control_port = free_port()
        self.url = f"http://127.0.0.1:{self.control_port}"
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def spawn(self, name: str, args: list[str], env: dict[str, str], port: int = 0) -> Proc:
        log = self.workdir / f"{name}.log"
        full = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDEGATE_LOG_LEVEL": "WARNING", **env}
        popen = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=full, cwd=self.workdir, start_new_session=True)
        proc = Proc(name, popen, port, log)
        self.processes.append(proc)
        return proc

    def start(self, v2_errors: float, v2_delay_ms: float) -> int:
        control = [PYTHON, "-m", "tidegate", "control", "--port", str(self.control_port), "--data", str(self.workdir / "data")]
        self.spawn("control", [*control, "--token", self.token, "--instance-ttl", "10"], {})
        wait(lambda: httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200, "the control plane")
        agent = {"TIDEGATE_METRICS_PUSH_S": "1", "TIDEGATE_HEARTBEAT_INTERVAL": "1"}
        for version, tag, errors, delay in (("v1", "", 0.0, 0.0), ("v2", "v2", v2_errors, v2_delay_ms)):
            port = free_port()
            run = [PYTHON, "-m", "tidegate", "run", "--service", "orders", "--control", self.url, "--token", self.token]
            if tag:
                run += ["--tag", tag]
            uvicorn = [PYTHON, "-m", "uvicorn", "bench_orders:app", "--port", str(port), "--log-level", "warning", "--no-access-log"]
            env = {**agent, "BENCH_VERSION": version, "BENCH_ERRORS": str(errors), "BENCH_DELAY_MS": str(delay)}
            self.spawn(f"orders-{version}", [*run, "--", *uvicorn], env, port)
        front_port = free_port()
        run = [PYTHON, "-m", "tidegate", "run", "--service", "front", "--control", self.url, "--token", self.token, "--"]
        uvicorn = [PYTHON, "-m", "uvicorn", "bench_front:app", "--port", str(front_port), "--log-level", "warning", "--no-access-log"]
        self.spawn("front", [*run, *uvicorn], agent, front_port)
        wait(lambda: len(self.instances("orders")) == 2 and self.instances("front"), "orders v1, v2 and front registered")
        wait(lambda: httpx.get(f"http://127.0.0.1:{front_port}/", timeout=5).status_code == 200, "front answering")
        return front_port

    def instances(self, service: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/v1/services/{service}/instances", headers=self.headers, timeout=5)
        return list(answer.json()) if answer.status_code == 200 else []

    def rollout(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/v1/rollouts/orders", headers=self.headers, timeout=5).json())

    def stop(self) -> None:
        for proc in sorted(self.processes, key=lambda p: p.name == "control"):
            proc.stop()


async def run_case(
    workdir: Path, name: str, rate: float, interval: float, v2_errors: float = 0.0, v2_delay_ms: float = 0.0
) -> dict[str, Any]:
    case = Case(workdir, name)
    try:
        front_port = await asyncio.to_thread(case.start, v2_errors, v2_delay_ms)
        load, stop = Load(), asyncio.Event()
        traffic = asyncio.create_task(open_loop(f"http://127.0.0.1:{front_port}/call", rate, stop, load))
        await asyncio.sleep(2.0)  # base traffic first, so base has numbers to compare with
        document = {
            "metadata": {"name": "orders-v2"},
            "spec": {
                "service": "orders",
                "tag": "v2",
                "steps": [20, 50, 100],
                "interval": f"{interval}s",
                "analysis": {"minRequests": 20, "inconclusiveLimit": 100},
            },
        }
        answer = httpx.post(f"{case.url}/v1/rollouts", json=document, headers=case.headers, timeout=10)
        if answer.status_code != 201:
            raise RuntimeError(f"rollout refused: {answer.text}")
        started = time.monotonic()
        budget = 4 * interval + 10 if rate >= 10 else 3 * interval + 1
        while time.monotonic() - started < budget:
            await asyncio.sleep(0.5)
            if (await asyncio.to_thread(case.rollout))["phase"] in ("aborted", "completed"):
                break
        await asyncio.sleep(2.0)  # traffic after the decision: what the drain or the abort left behind
        stop.set()
        await traffic
        state = await asyncio.to_thread(case.rollout)
        drained = [i["state"] for i in await asyncio.to_thread(case.instances, "orders") if i.get("tag", "") == ""]
        kinds = [d["kind"] for d in state["decisions"]]
        result = {
            "case": name,
            "phase": state["phase"],
            "step": state["step"],
            "weight": state["weight"],
            "reason": state["reason"],
            "decisions": kinds,
            "sent": load.sent,
            "failed": sum(load.failures.values()),
            "failed_gray": sum(n for reason, n in load.failures.items() if reason.startswith("v2 ")),
            "failures": dict(load.failures.most_common(5)),
            "old_instances": drained,
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        await asyncio.to_thread(case.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--interval", type=float, default=6.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-rollout-"))
    try:
        healthy = await run_case(workdir, "healthy", args.rate, args.interval)
        errors = await run_case(workdir, "errors", args.rate, args.interval, v2_errors=0.03)
        latency = await run_case(workdir, "latency", args.rate, args.interval, v2_delay_ms=80.0)
        quiet = await run_case(workdir, "quiet", 2.0, args.interval)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "healthy_promoted": healthy["phase"] == "completed",
        "failed_during_promotion": healthy["failed"],
        "old_drained": healthy["old_instances"] == ["DRAINING"] * len(healthy["old_instances"]) and bool(healthy["old_instances"]),
        "errors_case_aborted_at_step": errors["step"] + 1 if errors["phase"] == "aborted" else None,
        "errors_case_reason": errors["reason"][:160],
        "latency_case_aborted": latency["phase"] == "aborted" and "x base p99" in latency["reason"],
        "failed_gray_before_abort": errors["failed_gray"],
        "quiet_case_inconclusive": quiet["decisions"].count("inconclusive"),
        "quiet_case_passed": quiet["decisions"].count("passed"),
        "rate": args.rate,
        "interval_s": args.interval,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
