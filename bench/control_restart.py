"""Control-plane restarts under load: failed requests per phase, and how fast the registry resyncs.

Setup (all on 127.0.0.1, every service under `tidegate run`, default lease
15 s, so heartbeats every 5 s): a control plane, 3 instances of `orders` and a
`checkout` consumer whose handler calls `http://orders/...` through the agent
(one shared httpx AsyncClient, keep-alive). This script sends an open-loop
load (RATE req/s, requests leave on schedule whatever the answers' pace) to
`checkout` and counts every answer that is not 200 as failed, per phase:

  steady     before anything happens;
  down N     the control plane is SIGKILLed (N = 1, 2, 3) and, while it is
             down, one `orders` instance is replaced the way a rolling update
             does it: a new one started (it cannot register yet), the old one
             SIGTERMed (it drains: only the direct notices and the response
             headers tell the consumer); then the control plane is started
             again on the same port and data (a new epoch, an empty registry);
  resync N   from its first answer until its registry holds every live
             instance again (the new one included) — the resync time, one
             sample per instance and restart;
  after N    one more instance replaced, the control plane back;
  end        a last stretch of load.

Resync is timed from the restarted control plane's first `/v1/health` answer
to each instance's appearance in `/v1/services/<name>/instances`, both polled
every 10 ms; the push to the consumer adds milliseconds (`bench/watch_push.py`).
The anchor is the heartbeat interval (5 s): without the epoch, that is how long
an agent took to learn the control plane had lost it, and consumers had no
instance to call meanwhile.

Run: `.venv/bin/python bench/control_restart.py` (about 1 minute on 2 cores;
`--rate R`, `--restarts N`). The last line is one JSON object:
{"sent", "failed", "resync_p99_s", ...}. Target: 0 failed, resync <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
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
LEASE_S = 15.0
HEARTBEAT_S = LEASE_S / 3

PROVIDER = """
import json, os

INSTANCE = os.environ["INSTANCE_ID"]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"id": INSTANCE}).encode()})
"""

CONSUMER = """
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
        status, body = (200 if response.status_code == 200 else 502), {"id": response.json().get("id")}
    except Exception as error:
        status, body = 502, {"error": f"{type(error).__name__}: {error}"}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
"""


@dataclass
class Bench:
    workdir: Path
    token: str = field(default_factory=new_token)
    control: Proc | None = None
    control_port: int = field(default_factory=free_port)
    processes: list[Proc] = field(default_factory=list)
    serial: int = 0

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, port: int = 0) -> Proc:
        log = open(self.workdir / f"{name}.log", "ab")
        full = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDEGATE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"), **(env or {})}
        popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full, cwd=self.workdir, start_new_session=True)
        proc = Proc(name, popen, port)
        self.processes.append(proc)
        return proc

    def start_control(self) -> None:
        data = str(self.workdir / "control-data")
        args = [PYTHON, "-m", "tidegate", "control", "--port", str(self.control_port), "--data", data, "--token", self.token]
        self.control = self.spawn("control", [*args, "--instance-ttl", str(LEASE_S)])

    def kill_control(self) -> None:
        assert self.control is not None
        self.control.signal(signal.SIGKILL)
        self.control.popen.wait(timeout=10)

    def health(self) -> bool:
        try:
            return httpx.get(f"{self.control_url}/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def under_agent(self, service: str, name: str, command: list[str], port: int) -> Proc:
        run = [PYTHON, "-m", "tidegate", "run", "--service", service, "--control", self.control_url, "--token", self.token, "--"]
        return self.spawn(name, [*run, *command], {"INSTANCE_ID": name}, port)

    def start_orders(self) -> Proc:
        self.serial += 1
        port = free_port()
        uvicorn = [PYTHON, "-m", "uvicorn", "bench_provider:app", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        return self.under_agent("orders", f"orders-{self.serial}", uvicorn, port)

    def registered(self, service: str) -> set[int]:
        answer = httpx.get(
            f"{self.control_url}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {self.token}"}, timeout=2
        )
        return {i["port"] for i in answer.json()} if answer.status_code == 200 else set()

    def stop_all(self) -> None:
        for proc in sorted(self.processes, key=lambda p: p.name == "control"):
            proc.stop()


@dataclass
class Load:
    """Answers counted by the phase their request was sent in."""

    phase: str = "steady"
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def on_sent(self) -> str:
        self.sent[self.phase] += 1
        return self.phase

    def on_failed(self, key: str, reason: str) -> None:
        self.failed[key] += 1
        self.reasons[reason] += 1


def replace_one(bench: Bench, orders: list[Proc], plane_up: bool) -> Proc:
    """A rolling update's step: a new instance up (registered, when the control plane is), the oldest SIGTERMed."""
    new = bench.start_orders()
    if plane_up:
        wait(lambda: new.port in bench.registered("orders"), f"{new.name} to register")
        time.sleep(0.5)  # the consumer's directory follows the push
    else:
        wait(lambda: socket.create_connection(("127.0.0.1", new.port), timeout=1).close() is None, f"{new.name} to listen")
    old = orders.pop(0)
    old.signal(signal.SIGTERM)
    old.popen.wait(timeout=60)
    orders.append(new)
    return new


def restart_round(bench: Bench, orders: list[Proc], consumer: Proc, load: Load, n: int, resync: list[float]) -> None:
    load.phase = f"down {n}"
    bench.kill_control()
    time.sleep(0.5)
    replace_one(bench, orders, plane_up=False)
    load.phase = f"resync {n}"
    bench.start_control()
    wait(bench.health, "the control plane", interval=0.01)
    up = time.monotonic()
    expected = {("orders", p.port) for p in orders} | {("checkout", consumer.port)}
    seen: dict[tuple[str, int], float] = {}
    while len(seen) < len(expected) and time.monotonic() - up < 60:
        for service in ("orders", "checkout"):
            for port in bench.registered(service):
                if (service, port) in expected:
                    seen.setdefault((service, port), time.monotonic() - up)
        time.sleep(0.01)
    missing = expected - set(seen)
    if missing:
        raise RuntimeError(f"restart {n}: not registered again within 60 s: {sorted(missing)}")
    resync.extend(seen.values())
    each = ", ".join(f"{service}:{port} {at:.3f}" for (service, port), at in sorted(seen.items(), key=lambda item: item[1]))
    print(f"restart {n}: registry complete again {max(seen.values()):.3f} s after the control plane answered ({each})", flush=True)
    time.sleep(1.0)
    load.phase = f"after {n}"
    replace_one(bench, orders, plane_up=True)
    time.sleep(1.0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second (default 200)")
    parser.add_argument("--restarts", type=int, default=3, help="control-plane restarts (default 3)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-control-restart-"))
    (workdir / "bench_provider.py").write_text(PROVIDER)
    (workdir / "bench_consumer.py").write_text(CONSUMER)
    bench = Bench(workdir)
    figures: dict[str, Any] = {}
    try:
        bench.start_control()
        wait(bench.health, "the control plane")
        orders = [bench.start_orders() for _ in range(3)]
        consumer_port = free_port()
        uvicorn = [PYTHON, "-m", "uvicorn", "bench_consumer:app", "--port", str(consumer_port), "--log-level", "warning", "--no-access-log"]
        consumer = bench.under_agent("checkout", "checkout", uvicorn, consumer_port)
        wait(lambda: {p.port for p in orders} <= bench.registered("orders") and bench.registered("checkout"), "the services")
        wait(lambda: httpx.get(f"http://127.0.0.1:{consumer_port}/call", timeout=5).status_code == 200, "the consumer")

        load = Load()
        resync: list[float] = []
        phases = ["steady"] + [f"{p} {n}" for n in range(1, args.restarts + 1) for p in ("down", "resync", "after")] + ["end"]

        async def run() -> None:
            stop = asyncio.Event()
            traffic = asyncio.create_task(open_loop(f"http://127.0.0.1:{consumer_port}/call", args.rate, stop, load))

            def script() -> None:
                time.sleep(2.0)
                for n in range(1, args.restarts + 1):
                    restart_round(bench, orders, consumer, load, n, resync)
                load.phase = "end"
                time.sleep(2.0)

            try:
                await asyncio.to_thread(script)
            finally:
                stop.set()
                await traffic

        asyncio.run(run())
        for phase in phases:
            print(f"{phase:10} sent {load.sent[phase]:6}  failed {load.failed[phase]:4}", flush=True)
        for reason, count in load.reasons.most_common(5):
            print(f"    {count} x {reason}", flush=True)
        sent, failed = sum(load.sent.values()), sum(load.failed.values())
        p99 = percentile(resync, 0.99)
        print(
            f"{args.restarts} control-plane restarts at {args.rate:g} req/s: {failed} of {sent} requests failed; "
            f"resync p50 {percentile(resync, 0.5):.3f} s, p99 {p99:.3f} s, max {max(resync):.3f} s over {len(resync)} "
            f"instance re-registrations (anchor: the heartbeat interval, {HEARTBEAT_S:g} s)",
            flush=True,
        )
        figures = {
            "sent": sent,
            "failed": failed,
            "resync_p99_s": round(p99, 3),
            "resync_p50_s": round(percentile(resync, 0.5), 3),
            "resync_max_s": round(max(resync), 3),
            "restarts": args.restarts,
            "rate": args.rate,
            "failed_by_phase": {phase: load.failed[phase] for phase in phases},
            "heartbeat_s": HEARTBEAT_S,
        }
    finally:
        bench.stop_all()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
