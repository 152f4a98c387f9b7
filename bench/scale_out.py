"""Scale-out under load: p99 in the minute after a service goes from 2 to 4 instances, warm-up on vs off.

The provider (`bench/scale_out_provider.py`) is slow on its first requests in
realistic ways: a PostgreSQL pool that fills on demand, a price cache that
fills on demand (a miss costs a ~100 ms query), a lazy heavy import. The bench
process is the consumer: `tidegate.connect()` routes its httpx calls to
`http://<provider>` with the agent's balancer, under an open-loop load of
RATE requests per second (each request's latency is measured from the moment
it was due, so a stalled server cannot hide queueing). The two modes run side
by side, at the same time, on two services (the machine is shared: noise then
falls on both alike): per service, 2 instances, 10 s of load to warm them,
STEADY_S seconds measured (the anchor: the steady p99 of both services'
requests, alike at that point), then 2 more
instances of each start and AFTER_S seconds are measured from that moment.
New instances start at nice 19 and are reniced to 0 once registered (both
modes alike; see STARTUP_NICE).

- on: warm-up window 30 s (shortened from the 120 s default so the whole
  ramp falls inside the measured minute), quadratic curve; prewarm on (pool
  filled), warm-up requests `GET /catalog x2` (loads the cache and the lazy
  import) before registration. All pushed as the service's ServiceSettings.
- off: warm-up window 0 and every prewarm switched off (the instance still
  registers once it listens, as any registry client would).

Run: `.venv/bin/python bench/scale_out.py` (about 2 minutes). Uses
TIDEGATE_TEST_POSTGRES, or starts its own PostgreSQL the way
scripts/test.sh does. Last line: {"steady_p99_ms": ..., "p99_ratio_on": ...,
"p99_ratio_off": ...}; target p99_ratio_on <= 1.5.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
TOKEN = "bench-token-0123456789"
RATE = float(os.environ.get("SCALE_RATE", "50"))
WARM_S = 10.0
STEADY_S = float(os.environ.get("SCALE_STEADY_S", "20"))
AFTER_S = float(os.environ.get("SCALE_AFTER_S", "60"))
WINDOW_S = 30.0
ITEMS = 200
#: New instances start at this niceness and get 0 once registered: on a 2-core box their startup
#: (imports, ~1-2 s of CPU each) would otherwise steal the CPU of the instances serving the load,
#: which on a real scale-out start on machines of their own. Both modes alike.
STARTUP_NICE = 19

MODES = ("off", "on")
SETTINGS = {
    "on": {"warmupWindowSeconds": WINDOW_S, "warmupCurve": 2, "warmupRequests": "GET /catalog x2, GET /price/1 x20"},
    "off": {"warmupWindowSeconds": 0, "prewarmSqlAlchemy": False, "prewarmRedis": False, "prewarmHttp": False},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Postgres:
    """TIDEGATE_TEST_POSTGRES, or a throwaway server started as scripts/test.sh does."""

    def __init__(self, tmp: Path) -> None:
        self.stop_command: str | None = None
        url = os.environ.get("TIDEGATE_TEST_POSTGRES")
        if url:
            self.url = url
            return
        bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        data = tmp / "pg"
        data.mkdir()
        tmp.chmod(0o755)
        shutil.chown(data, "postgres")
        port = free_port()
        run = lambda cmd: subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", cmd], check=True, capture_output=True)  # noqa: E731
        run(f"{bin_dir}/initdb -D {data} -U postgres --auth=trust -E UTF8")
        run(f"{bin_dir}/pg_ctl -D {data} -o '-k {data} -h 127.0.0.1 -p {port} -c max_connections=300' -l {data}/log -w start")
        self.stop_command = f"{bin_dir}/pg_ctl -D {data} -m immediate stop"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        if self.stop_command:
            subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", self.stop_command], capture_output=True)


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None, nice: int = 0) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")
        prefix = ["nice", "-n", str(nice)] if nice else []  # nice execs the program: same pid, same group
        proc = subprocess.Popen(
            [*prefix, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(REPO / "bench"),
            start_new_session=True,
        )
        self.running.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        self.running.clear()


@dataclass
class Samples:
    """(due time, latency s, ok, port of the instance that answered or 0) of every request."""

    rows: list[tuple[float, float, bool, int]] = field(default_factory=list)

    def between(self, start: float, end: float, ports: Collection[int] | None = None) -> list[float]:
        return sorted(latency for due, latency, _, port in self.rows if start <= due < end and (ports is None or port in ports))

    def errors(self, start: float, end: float) -> int:
        return sum(1 for due, _, ok, _ in self.rows if start <= due < end and not ok)


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one(client: httpx.AsyncClient, service: str, due: float, samples: Samples, n: int) -> None:
    ok, port = False, 0
    try:
        response = await client.get(f"http://{service}/price/{n % ITEMS}")
        ok = response.status_code == 200
        port = int(response.json()["port"]) if ok else 0
    except httpx.HTTPError:
        ok = False
    samples.rows.append((due, time.monotonic() - due, ok, port))


async def load(service: str, until: asyncio.Event, samples: Samples) -> None:
    """Open loop: one request due every 1/RATE s, sent when due whatever the others are doing."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        n = 0
        while not until.is_set():
            due = start + n / RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # yield even when behind, so the scene can go on
            task = asyncio.create_task(_one(client, service, due, samples, n * 7919))  # spread over items
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)


def start_instance(procs: Procs, control: str, service: str, db: str, index: int, nice: int = 0) -> tuple[int, int]:
    """Start one provider instance; returns (its port, its process group)."""
    port = free_port()
    proc = procs.start(
        f"{service}-{index}",
        [
            PYTHON,
            "-m",
            "tidegate",
            "run",
            "--service",
            service,
            "--control",
            control,
            "--token",
            TOKEN,
            "--",
            str(BIN / "uvicorn"),
            "scale_out_provider:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env={"SCALE_DB": db, "SCALE_PORT": str(port), "TIDEGATE_LOG_LEVEL": "INFO", "TIDEGATE_STATE_DIR": str(procs.tmp / "state")},
        nice=nice,
    )
    return port, proc.pid


def renice_once_registered(control: str, service: str, groups: dict[int, int]) -> None:
    """Give each new instance (by port) normal CPU priority as soon as it is in the registry.

    One kept-alive client: `httpx.get` builds an SSL context per call, whose CPU (under
    the GIL) would stall this process's load generator while it polls."""
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as client:
        while groups:
            response = client.get(f"{control}/v1/services/{service}/instances")
            for instance in response.json() if response.status_code == 200 else []:
                group = groups.pop(int(instance["port"]), None)
                if group is not None:
                    os.setpriority(os.PRIO_PGRP, group, 0)
            time.sleep(0.05)


def warm_long_running(control: str, service: str) -> None:
    """The first two instances stand for ones that have served for hours: their caches are loaded."""
    response = httpx.get(f"{control}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    for instance in response.json():
        httpx.get(f"http://{instance['host']}:{instance['port']}/catalog", timeout=10).raise_for_status()
        for item in range(20):  # and every query path has run
            httpx.get(f"http://{instance['host']}:{instance['port']}/price/{item}", timeout=10).raise_for_status()


def routable(control: str, service: str) -> int:
    response = httpx.get(f"{control}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    if response.status_code == 404:
        return 0
    return sum(1 for i in response.json() if i["state"] in ("WARMING", "SERVING"))


async def run_both(procs: Procs, control: str, db: str) -> dict[str, dict[str, float]]:
    """Both modes side by side, on two services, so the machine's noise falls on both alike."""
    from tidegate.client.control import ControlClient

    services = {mode: f"provider-{mode}" for mode in MODES}
    with ControlClient(control, TOKEN) as client:
        for mode, service in services.items():
            client.apply_rules(
                {
                    "apiVersion": "tidegate.io/v1alpha1",
                    "kind": "ServiceSettings",
                    "metadata": {"name": service},
                    "spec": {"service": service, **SETTINGS[mode]},
                }
            )
    for service in services.values():
        for index in (1, 2):
            start_instance(procs, control, service, db, index)
    for service in services.values():
        await asyncio.to_thread(wait_for, lambda: routable(control, service) == 2, 60, f"{service}: 2 instances")
        await asyncio.to_thread(warm_long_running, control, service)
    samples = {mode: Samples() for mode in MODES}
    done = asyncio.Event()
    loaders = [asyncio.create_task(load(services[mode], done, samples[mode])) for mode in MODES]
    began = time.monotonic()
    await asyncio.sleep(WARM_S + STEADY_S)
    scaled_at = time.monotonic()
    renicing = []
    new_ports: dict[str, set[int]] = {}
    for mode, service in services.items():
        groups = dict([await asyncio.to_thread(start_instance, procs, control, service, db, index, STARTUP_NICE) for index in (3, 4)])
        new_ports[mode] = set(groups)
        renicing.append(asyncio.to_thread(renice_once_registered, control, service, dict(groups)))
    await asyncio.wait_for(asyncio.gather(*renicing), 60)
    await asyncio.sleep(max(0.0, scaled_at + AFTER_S - time.monotonic()))
    done.set()
    await asyncio.gather(*loaders)
    both = Samples([row for mode in MODES for row in samples[mode].rows])  # at steady state the services are alike
    anchor = percentile(both.between(began + WARM_S, scaled_at), 0.99) * 1000
    return {mode: figures(mode, samples[mode], began, scaled_at, anchor, new_ports[mode]) for mode in MODES}


def figures(mode: str, samples: Samples, began: float, scaled_at: float, anchor_ms: float, new_ports: set[int]) -> dict[str, float]:
    steady = samples.between(began + WARM_S, scaled_at)
    after = samples.between(scaled_at, scaled_at + AFTER_S)
    result = {
        "steady_p50_ms": percentile(steady, 0.50) * 1000,
        "steady_p99_ms": percentile(steady, 0.99) * 1000,
        "after_p50_ms": percentile(after, 0.50) * 1000,
        "after_p99_ms": percentile(after, 0.99) * 1000,
        "errors": float(samples.errors(began, scaled_at + AFTER_S)),
        "requests": float(len(samples.rows)),
    }
    result["p99_ratio"] = result["after_p99_ms"] / anchor_ms
    result["anchor_ms"] = anchor_ms
    timeline = [percentile(samples.between(scaled_at + t, scaled_at + t + 5), 0.99) * 1000 for t in range(-10, int(AFTER_S), 5)]
    print(f"{mode:>3}: p99 per 5 s from 10 s before scale-out: " + " ".join(f"{v:.0f}" for v in timeline))
    to_new = samples.between(scaled_at, scaled_at + AFTER_S, new_ports)
    old_ports = {row[3] for row in samples.rows if row[3] and row[3] not in new_ports}
    to_old = samples.between(scaled_at, scaled_at + AFTER_S, old_ports)
    print(
        f"{mode:>3}: after scale-out, new instances took {len(to_new)} requests (p99 {percentile(to_new, 0.99) * 1000:.1f} ms), "
        f"old ones {len(to_old)} (p99 {percentile(to_old, 0.99) * 1000:.1f} ms)"
    )
    result["new_p99_ms"] = percentile(to_new, 0.99) * 1000
    print(
        f"{mode:>3}: steady p50 {result['steady_p50_ms']:.1f} ms p99 {result['steady_p99_ms']:.1f} ms | "
        f"{AFTER_S:.0f} s after 2->4: p50 {result['after_p50_ms']:.1f} ms p99 {result['after_p99_ms']:.1f} ms | "
        f"p99 ratio {result['p99_ratio']:.2f} | {result['requests']:.0f} requests, {result['errors']:.0f} errors",
        flush=True,
    )
    return result


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tidegate-scale-out-"))
    postgres = Postgres(tmp)
    procs = Procs(tmp)
    control_port = free_port()
    control = f"http://127.0.0.1:{control_port}"
    plane = Procs(tmp)
    try:
        plane.start(
            "control", [PYTHON, "-m", "tidegate", "control", "--port", str(control_port), "--data", str(tmp / "control"), "--token", TOKEN]
        )
        wait_for(lambda: httpx.get(f"{control}/v1/health", timeout=1).status_code == 200, 30, "the control plane")
        import tidegate

        tidegate.connect(control, TOKEN, service="loadgen")
        print(
            f"open-loop load {RATE:.0f} req/s to each of two providers (warm-up off, on), side by side; 2 -> 4 instances each; warm-up window {WINDOW_S:.0f} s (demo-short)",
            flush=True,
        )
        results = await run_both(procs, control, postgres.url)
        off, on = results["off"], results["on"]
    finally:
        procs.stop_all()
        plane.stop_all()
        postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "steady_p99_ms": round(on["anchor_ms"], 2),
                "after_p99_ms_on": round(on["after_p99_ms"], 2),
                "after_p99_ms_off": round(off["after_p99_ms"], 2),
                "new_instances_p99_ms_on": round(on["new_p99_ms"], 2),
                "new_instances_p99_ms_off": round(off["new_p99_ms"], 2),
                "p99_ratio_on": round(on["p99_ratio"], 3),
                "p99_ratio_off": round(off["p99_ratio"], 3),
                "errors_on": int(on["errors"]),
                "errors_off": int(off["errors"]),
                "rate_rps": RATE,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
