"""Rolling restarts behind the gateway, a restart of one of two gateways, and the same restarts behind nginx.

Setup (all on 127.0.0.1): a control plane; 3 instances of the entry service `entry` (uvicorn under
`tidegate run`, lossless on); two `tidegate gateway` processes sharing one port with SO_REUSEPORT
(two replicas behind one address), fed by the control plane's watch, one GatewayRoute `/ -> entry`
applied through the control plane's API; and nginx with a static upstream list of the 3 first
instances (proxy_pass with keepalive, `proxy_next_upstream error timeout`, what an ingress with a
cached list has). Open-loop load (RATE req/s each, requests leave on schedule whatever the answers'
pace; httpx without retries) goes to the gateways' port and to nginx at the same time while the
entry instances are replaced in turn the way a Kubernetes rolling update does it (maxSurge 1: start
a new instance on a new port, wait until it is routable, SIGTERM the old one, wait until it exits).
Every answer that is not 200 is failed. Then one of the two gateways gets SIGTERM (and is started
again) under the same load: its in-flight requests finish, its keep-alive connections close with
`connection: close`, new connections land on the other one.

    python bench/gateway_restart.py [--restarts 20] [--rate 200] [--gateway-restarts 10] [--migrate-req]

`--migrate-req` (root) runs the whole bench in a network namespace of its own (`unshare --net`,
its loopback up) with `net.ipv4.tcp_migrate_req=1` there, the kernel switch that hands the
connections queued at a closing listener to the other listener on the port (without it they are
reset: a few per gateway restart); the host's own setting is not touched.

Last line: JSON {"restarts", "rate", "sent_gateway", "failed_gateway", "sent_nginx", "failed_nginx",
"sent_gateway_restart", "failed_gateway_restart"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rolling_restart import PROVIDER, PYTHON, Bench, Load, Proc, free_port, wait  # noqa: E402
from tidegate.client.control import ControlClient  # noqa: E402

ROUTE = """\
apiVersion: traffic.opensergo.io/v1alpha1
kind: GatewayRoute
metadata: {name: entry}
spec:
  match: {path: {prefix: /}}
  service: entry
"""


def start_entry(bench: Bench) -> Proc:
    bench.serial += 1
    name, port = f"entry-{bench.serial}", free_port()
    command = [PYTHON, "-m", "uvicorn", "bench_provider:app", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return bench.run_under_agent("entry", command, True, name, port)


def routable(bench: Bench, service: str = "entry") -> set[int]:
    answer = httpx.get(
        f"{bench.control_url}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {bench.token}"}, timeout=5
    )
    if answer.status_code == 404:
        return set()
    return {i["port"] for i in answer.json() if i["state"] in ("SERVING", "WARMING")}


def start_gateway(bench: Bench, port: int, name: str) -> Proc:
    admin = free_port()
    command = [PYTHON, "-m", "tidegate", "gateway", "--port", str(port), "--admin-port", str(admin)]
    command += ["--control", bench.control_url, "--token", bench.token, "--snapshot", str(bench.workdir / f"{name}.snapshot")]
    proc = bench.spawn(name, command, port=port)
    wait(lambda: httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200, name)
    wait(lambda: httpx.get(f"http://127.0.0.1:{port}/who", timeout=2).status_code == 200, f"{name} to route")
    return proc


def start_nginx(bench: Bench, upstream_ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    servers = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s; " for p in upstream_ports)
    conf = bench.workdir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            daemon off;
            pid {bench.workdir}/nginx.pid;
            error_log {bench.workdir}/nginx.err warn;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              upstream entry {{ {servers} keepalive 64; }}
              server {{
                listen 127.0.0.1:{port};
                location / {{ proxy_pass http://entry; proxy_http_version 1.1; proxy_set_header Connection "";
                             proxy_next_upstream error timeout; proxy_connect_timeout 1s; }}
              }}
            }}
            """
        )
    )
    log = open(bench.workdir / "nginx.log", "wb")  # noqa: SIM115
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(bench.workdir)], stdout=log, stderr=log, start_new_session=True)
    wait(lambda: httpx.get(f"http://127.0.0.1:{port}/who", timeout=2).status_code == 200, "nginx")
    return nginx, port


async def loads(targets: dict[str, int], rate: float, action: Any) -> dict[str, Load]:
    """Open-loop load on every target at once while `action` runs (in a thread)."""
    stop = asyncio.Event()
    results = {name: Load() for name in targets}
    traffic = [asyncio.create_task(open_loop(port, rate, stop, results[name])) for name, port in targets.items()]
    await asyncio.sleep(1.0)
    try:
        await asyncio.to_thread(action)
    finally:
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*traffic)
    return results


async def open_loop(port: int, rate: float, stop: asyncio.Event, load: Load) -> None:
    """Requests leave on schedule whatever the answers' pace; anything but a 200 is a failure (httpx: no retries)."""
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=60.0, limits=limits, trust_env=False) as client:

        async def one() -> None:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/who")
                if response.status_code != 200:
                    load.failures[f"HTTP {response.status_code}: {response.text[:80].strip()}"] += 1
            except Exception as error:
                load.failures[f"{type(error).__name__}: {error}"[:120]] += 1

        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            load.sent += 1
            i += 1
        if tasks:
            await asyncio.gather(*tasks)


def rolling(bench: Bench, instances: list[Proc], restarts: int) -> None:
    for _ in range(restarts):
        old = instances.pop(0)
        new = start_entry(bench)
        wait(lambda: new.port in routable(bench), f"{new.name} to register")
        time.sleep(0.3)
        old.signal(signal.SIGTERM)
        old.popen.wait(timeout=60)
        instances.append(new)


NETNS_ENV = "TIDEGATE_BENCH_OWN_NETNS"


def in_own_network_namespace() -> int:
    """Re-run this bench in a new network namespace (loopback up, tcp_migrate_req=1 there)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        print("--migrate-req needs unshare (util-linux) and ip (iproute2)", file=sys.stderr)
        return 2
    inner = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    script = f"ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req=1 && exec {inner}"
    return subprocess.call(["unshare", "--net", "--", "sh", "-c", script], env={**os.environ, NETNS_ENV: "1"})


def report(label: str, load: Load) -> None:
    print(f"{label:64}: sent {load.sent:6}, failed {load.failed:5}", flush=True)
    for reason, count in load.failures.most_common(3):
        print(f"    {count} x {reason}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second to each front (default 200)")
    parser.add_argument("--gateway-restarts", type=int, default=2, help="restarts of one of the two gateways (default 2)")
    parser.add_argument(
        "--migrate-req", action="store_true", help="run in a network namespace of its own with net.ipv4.tcp_migrate_req=1 (root)"
    )
    args = parser.parse_args()
    if args.migrate_req and os.environ.get(NETNS_ENV) != "1":
        return in_own_network_namespace()
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-gateway-restart-"))
    (workdir / "bench_provider.py").write_text(PROVIDER)
    bench = Bench(workdir, args.rate)
    nginx: subprocess.Popen[bytes] | None = None
    figures: dict[str, Any] = {}
    try:
        bench.start_control()
        ControlClient(bench.control_url, bench.token).apply_rules(ROUTE)
        instances = [start_entry(bench) for _ in range(3)]
        wait(lambda: {i.port for i in instances} <= routable(bench), "3 entry instances")
        port = free_port()
        gateways = [start_gateway(bench, port, "gateway-a"), start_gateway(bench, port, "gateway-b")]
        nginx, nginx_port = start_nginx(bench, [i.port for i in instances])
        results = asyncio.run(loads({"gateway": port, "nginx": nginx_port}, args.rate, lambda: rolling(bench, instances, args.restarts)))
        print(f"{args.restarts} rolling restarts of the entry service, {args.rate:g} req/s to each front, at the same time:")
        report("  behind tidegate gateway (2 replicas, instances from the watch)", results["gateway"])
        report("  behind nginx (static upstream list, proxy_next_upstream error)", results["nginx"])

        def restart_one_gateway() -> None:
            for _ in range(args.gateway_restarts):
                old = gateways.pop(0)
                old.signal(signal.SIGTERM)
                old.popen.wait(timeout=60)
                gateways.append(start_gateway(bench, port, f"{old.name}-again"))

        restart = asyncio.run(loads({"gateway": port}, args.rate, restart_one_gateway))["gateway"]
        report(f"  {args.gateway_restarts} restart(s) of one of the two gateways (SIGTERM, start again)", restart)
        figures = {
            "restarts": args.restarts,
            "rate": args.rate,
            "sent_gateway": results["gateway"].sent,
            "failed_gateway": results["gateway"].failed,
            "sent_nginx": results["nginx"].sent,
            "failed_nginx": results["nginx"].failed,
            "gateway_restarts": args.gateway_restarts,
            "sent_gateway_restart": restart.sent,
            "failed_gateway_restart": restart.failed,
            "migrate_req": os.environ.get(NETNS_ENV) == "1",
        }
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        bench.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))
    return 0 if figures and figures["failed_gateway"] == 0 and figures["failed_gateway_restart"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
