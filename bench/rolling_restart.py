"""Rolling restarts under open-loop load: failed requests with lossless offline on, and off.

Setup (all on 127.0.0.1, every process under `tidegate run`): a control plane,
3 instances of `orders`, and a `checkout` consumer whose handler calls
`http://orders/...` through the agent (one shared httpx AsyncClient,
keep-alive). This script sends an open-loop load (RATE req/s, requests leave
on schedule whatever the answers' pace) to `checkout` and counts every answer
that is not 200 as failed, while every `orders` instance is replaced in turn
the way a Kubernetes rolling update does it (maxSurge 1): start a new instance
on a new port, wait until it is routable, SIGTERM the old one, wait until it
exits. Rounds:

  1. uvicorn instances: lossless on; lossless off (TIDEGATE_LOSSLESS=off in
     every process) with a consumer that refreshes its instance list every
     30 s and round-robins over it, as Ribbon does by default — the anchor,
     since that is what consumers without a push have; and lossless off with
     the consumer following the control plane's push (the agent's routing and
     deregistration on shutdown, without drain, notices or retries);
  2. gunicorn + Flask-style WSGI instances (2 sync workers each): on, off
     (`--all-rounds` adds off with the push);
  3. control plane down: with lossless on, the control plane is killed and
     two of the three uvicorn instances are stopped (scale-in) — only the
     direct notices and response headers tell the consumer;
  4. SIGKILL: one instance is killed outright; only requests in flight on it
     at that moment may fail (new ones are retried elsewhere and the instance
     is ejected); failures of requests that never reached it are counted apart.

"Drain notice" is the time from SIGTERM to the last request that reached the
draining instance (each instance notes the arrival time of its latest request).

Run: `.venv/bin/python bench/rolling_restart.py` (about 5 minutes on 2 cores);
`--restarts N` restarts per rolling round (default 4: 20 in all), `--rate R`.
A longer run: `--restarts 12 --rate 300 --all-rounds`. The last line is one
JSON object: {"sent", "failed_lossless_on", "failed_lossless_off",
"drain_notice_p50_ms", "drain_notice_p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
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
BIN = Path(PYTHON).parent

PROVIDER = """
import json, os, time

INSTANCE = os.environ["INSTANCE_ID"]
LAST = os.path.join(os.environ["BENCH_DIR"], f"{INSTANCE}-{os.getpid()}.last")


def _note() -> None:
    with open(LAST, "w") as f:
        f.write(repr(time.time()))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    _note()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"id": INSTANCE}).encode()})


def wsgi_app(environ, start_response):
    _note()
    body = json.dumps({"id": INSTANCE}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""

CONSUMER = """
import json
import httpx

from tidegate.control.storage import new_token

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


RIBBON_CONSUMER = """
import asyncio, itertools, json, os, time
import httpx

from tidegate.control.storage import new_token

CONTROL, TOKEN, REFRESH_S = os.environ["BENCH_CONTROL"], os.environ["BENCH_TOKEN"], float(os.environ["BENCH_REFRESH_S"])
client = None
servers = []
turn = itertools.count()
refreshed = 0.0


async def refresh():
    global servers, refreshed
    answer = await client.get(f"{CONTROL}/v1/services/orders/instances", headers={"Authorization": f"Bearer {TOKEN}"})
    servers = [f"{i['host']}:{i['port']}" for i in answer.json() if i["state"] in ("SERVING", "WARMING")]
    refreshed = time.monotonic()


async def app(scope, receive, send):
    global client
    if scope["type"] != "http":
        return
    if client is None:
        client = httpx.AsyncClient(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=400))
    try:
        if not servers or time.monotonic() - refreshed > REFRESH_S:
            await refresh()
        server = servers[next(turn) % len(servers)]
        response = await client.get(f"http://{server}/who")
        status, body = (200 if response.status_code == 200 else 502), {"id": response.json().get("id")}
    except Exception as error:
        status, body = 502, {"error": f"{type(error).__name__}: {error}"}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
"""
#: The harsher baseline's instance-list refresh (Ribbon's ServerListRefreshInterval default).
RIBBON_REFRESH_S = 30.0


@dataclass
class Bench:
    workdir: Path
    rate: float
    token: str = field(default_factory=new_token)
    control: Proc | None = None
    control_port: int = 0
    processes: list[Proc] = field(default_factory=list)
    serial: int = 0

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, port: int = 0) -> Proc:
        log = self.workdir / f"{name}.log"
        full = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_DIR": str(self.workdir), "TIDEGATE_LOG_LEVEL": "WARNING", **(env or {})}
        popen = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=full, cwd=self.workdir, start_new_session=True)
        proc = Proc(name, popen, port, log)
        self.processes.append(proc)
        return proc

    def start_control(self) -> None:
        self.control_port = self.control_port or free_port()
        self.control = self.spawn(
            "control",
            [
                PYTHON,
                "-m",
                "tidegate",
                "control",
                "--port",
                str(self.control_port),
                "--data",
                str(self.workdir / "control-data"),
                "--token",
                self.token,
                "--instance-ttl",
                "10",
            ],
        )
        wait(lambda: httpx.get(f"{self.control_url}/v1/health", timeout=1).status_code == 200, "the control plane")

    def run_under_agent(self, service: str, command: list[str], lossless: bool, name: str, port: int) -> Proc:
        args = [PYTHON, "-m", "tidegate", "run", "--service", service, "--control", self.control_url, "--token", self.token, "--", *command]
        env = {"TIDEGATE_LOSSLESS": "on" if lossless else "off", "INSTANCE_ID": name, "TIDEGATE_HEARTBEAT_INTERVAL": "1"}
        return self.spawn(name, args, env, port)

    def start_orders(self, kind: str, lossless: bool) -> Proc:
        self.serial += 1
        name, port = f"orders-{self.serial}", free_port()
        if kind == "uvicorn":
            command = [PYTHON, "-m", "uvicorn", "bench_provider:app", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        else:
            command = [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench_provider:wsgi_app"]
        return self.run_under_agent("orders", command, lossless, name, port)

    def routable(self) -> set[int]:
        answer = httpx.get(f"{self.control_url}/v1/services/orders/instances", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        if answer.status_code == 404:
            return set()
        return {i["port"] for i in answer.json() if i["state"] in ("SERVING", "WARMING")}

    def stop_all(self) -> None:
        for proc in sorted(self.processes, key=lambda p: p.name == "control"):
            proc.stop()


@dataclass
class Load:
    """Requests sent and failed, in all; failures by reason."""

    sent: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def on_sent(self) -> str:
        self.sent += 1
        return ""

    def on_failed(self, key: str, reason: str) -> None:
        self.failures[reason] += 1


def last_arrival(workdir: Path, name: str) -> float:
    times = [float(p.read_text() or 0) for p in workdir.glob(f"{name}-*.last")]
    return max(times, default=0.0)


async def under_load(bench: Bench, consumer_port: int, action: Any) -> tuple[Load, Any]:
    load, stop = Load(), asyncio.Event()
    traffic = asyncio.create_task(open_loop(f"http://127.0.0.1:{consumer_port}/call", bench.rate, stop, load))
    await asyncio.sleep(1.0)
    try:
        result = await asyncio.to_thread(action)
    finally:
        await asyncio.sleep(1.0)
        stop.set()
        await traffic
    return load, result


def rolling(bench: Bench, kind: str, lossless: bool, restarts: int, instances: list[Proc]) -> list[float]:
    """Replace instances in turn `restarts` times; the SIGTERM-to-last-request times in ms."""
    notice_ms = []
    for _ in range(restarts):
        old = instances.pop(0)
        new = bench.start_orders(kind, lossless)
        wait(lambda: new.port in bench.routable(), f"{new.name} to register")
        time.sleep(0.5)  # the consumer's directory follows the push
        sent_term = time.time()
        old.signal(signal.SIGTERM)
        old.popen.wait(timeout=60)
        notice_ms.append(max(0.0, last_arrival(bench.workdir, old.name) - sent_term) * 1000)
        instances.append(new)
    return notice_ms


def start_fleet(bench: Bench, kind: str, lossless: bool, ribbon: bool = False) -> tuple[list[Proc], Proc, int]:
    instances = [bench.start_orders(kind, lossless) for _ in range(3)]
    consumer_port = free_port()
    uvicorn = [PYTHON, "-m", "uvicorn", "--port", str(consumer_port), "--log-level", "warning", "--no-access-log"]
    if ribbon:  # no agent in the consumer: it polls the registry and round-robins, like Ribbon
        env = {"BENCH_CONTROL": bench.control_url, "BENCH_TOKEN": bench.token, "BENCH_REFRESH_S": str(RIBBON_REFRESH_S)}
        consumer = bench.spawn(f"checkout-ribbon-{bench.serial}", [*uvicorn, "bench_ribbon:app"], env, consumer_port)
    else:
        consumer = bench.run_under_agent("checkout", [*uvicorn, "bench_consumer:app"], lossless, f"checkout-{bench.serial}", consumer_port)
    wait(lambda: {i.port for i in instances} <= bench.routable(), "3 orders instances")
    wait(lambda: httpx.get(f"http://127.0.0.1:{consumer_port}/call", timeout=5).status_code == 200, "the consumer")
    return instances, consumer, consumer_port


def stop_fleet(instances: list[Proc], consumer: Proc) -> None:
    for proc in [*instances, consumer]:
        proc.stop()


def round_rolling(bench: Bench, kind: str, lossless: bool, restarts: int, ribbon: bool = False) -> tuple[Load, list[float]]:
    instances, consumer, port = start_fleet(bench, kind, lossless, ribbon)
    try:
        return asyncio.run(under_load(bench, port, lambda: rolling(bench, kind, lossless, restarts, instances)))
    finally:
        stop_fleet(instances, consumer)


def round_control_plane_down(bench: Bench) -> Load:
    instances, consumer, port = start_fleet(bench, "uvicorn", True)

    def scale_in() -> None:
        assert bench.control is not None
        bench.control.signal(signal.SIGKILL)  # gone, not shut down cleanly
        bench.control.popen.wait(timeout=10)
        time.sleep(0.5)
        for old in instances[:2]:
            old.signal(signal.SIGTERM)
            old.popen.wait(timeout=60)
            time.sleep(1.0)

    try:
        load, _ = asyncio.run(under_load(bench, port, scale_in))
        return load
    finally:
        stop_fleet(instances, consumer)
        bench.start_control()  # the same port and data: agents reconnect


#: Failures of requests that never reached an instance: those a killed instance must not cause.
NEVER_SENT = ("ConnectError", "ConnectTimeout", "NoInstanceError", "HttpxNoInstanceError")


def round_sigkill(bench: Bench) -> tuple[Load, int]:
    """SIGKILL one instance under load; (the load, failures of requests that were not in flight on it)."""
    instances, consumer, port = start_fleet(bench, "uvicorn", True)

    def kill() -> None:
        victim = instances[0]
        victim.signal(signal.SIGKILL)
        victim.popen.wait(timeout=10)
        time.sleep(3.0)

    try:
        load, _ = asyncio.run(under_load(bench, port, kill))
        return load, sum(n for reason, n in load.failures.items() if reason.startswith(NEVER_SENT))
    finally:
        stop_fleet(instances, consumer)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


DESCRIPTIONS = {
    "on": "lossless on",
    "off": f"lossless off, consumer refreshes its list every {RIBBON_REFRESH_S:g} s",
    "off_push": "lossless off, consumer follows the control plane's push",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=4, help="restarts per rolling round (5 rounds; default 4, so 20 in all)")
    parser.add_argument("--all-rounds", action="store_true", help="also gunicorn with lossless off and the control plane's push")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second (default 200)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-rolling-"))
    (workdir / "bench_provider.py").write_text(PROVIDER)
    (workdir / "bench_consumer.py").write_text(CONSUMER)
    (workdir / "bench_ribbon.py").write_text(RIBBON_CONSUMER)
    bench = Bench(workdir, args.rate)
    figures: dict[str, Any] = {}
    try:
        bench.start_control()
        totals: Counter[str] = Counter()
        notices: dict[str, list[float]] = {}
        rounds = [
            ("uvicorn", "on", True, False),
            ("uvicorn", "off", False, True),
            ("uvicorn", "off_push", False, False),
            ("gunicorn", "on", True, False),
            ("gunicorn", "off", False, True),
        ]
        if args.all_rounds:
            rounds.append(("gunicorn", "off_push", False, False))
        for kind, label, lossless, ribbon in rounds:
            load, notice_ms = round_rolling(bench, kind, lossless, args.restarts, ribbon)
            totals["sent"] += load.sent
            totals[f"failed_{label}"] += load.failed
            totals["restarts"] += args.restarts
            notices[label] = notices.get(label, []) + notice_ms
            print(
                f"{kind:8} {DESCRIPTIONS[label]:58}: {args.restarts} restarts, sent {load.sent:5}, failed {load.failed:4}, "
                f"SIGTERM->last request p50 {percentile(notice_ms, 0.5):5.0f} ms p99 {percentile(notice_ms, 0.99):5.0f} ms",
                flush=True,
            )
            for reason, count in load.failures.most_common(3):
                print(f"    {count} x {reason}", flush=True)
        down = round_control_plane_down(bench)
        print(f"control plane down, lossless on: 2 instances stopped (scale-in), sent {down.sent}, failed {down.failed}", flush=True)
        for reason, count in down.failures.most_common(3):
            print(f"    {count} x {reason}", flush=True)
        killed, not_in_flight = round_sigkill(bench)
        print(
            f"SIGKILL of one instance, lossless on: sent {killed.sent}, failed {killed.failed}, of which {not_in_flight} never reached "
            f"an instance (the rest got no answer on a connection to the killed instance: in flight when it died)",
            flush=True,
        )
        for reason, count in killed.failures.most_common(3):
            print(f"    {count} x {reason}", flush=True)
        figures = {
            "sent": totals["sent"] + down.sent + killed.sent,
            "restarts": totals["restarts"],
            "rate": args.rate,
            "failed_lossless_on": totals["failed_on"],
            "failed_lossless_off": totals["failed_off"],
            "failed_lossless_off_push": totals["failed_off_push"],
            "drain_notice_p50_ms": round(percentile(notices["on"], 0.5), 1),
            "drain_notice_p99_ms": round(percentile(notices["on"], 0.99), 1),
            "drain_notice_off_push_p50_ms": round(percentile(notices["off_push"], 0.5), 1),
            "failed_control_plane_down": down.failed,
            "failed_sigkill": killed.failed,
            "failed_sigkill_not_in_flight": not_in_flight,
        }
        anchor = totals["failed_off"]
        print(
            f"failed requests: lossless on {totals['failed_on']} vs off {anchor} (anchor: {RIBBON_REFRESH_S:g} s list refresh, same run; "
            f"off with the control plane's push: {totals['failed_off_push']}) over {totals['sent']} requests and {totals['restarts']} restarts"
        )
    finally:
        bench.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
