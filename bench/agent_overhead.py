"""Agent overhead: requests per second of hello-world apps, bare vs under `tidegate run`.

Two pairs, each measured against its own anchor in the same run:
  - FastAPI on uvicorn (one process, access log off), keep-alive connections;
  - Flask on gunicorn with one sync worker, which closes every connection
    (sync workers do not keep connections alive), so each request is a new one.
The anchor is the same app on the same server without the agent. The agent
run has a control plane up, so the instance registers, heartbeats and watches
as in production. The servers run side by side; a load generator in a separate
process (HTTP/1.1 over raw asyncio streams, so the client is cheap and the
server is the bottleneck) sends a fixed number of requests from N concurrent
connections, in short rounds, bare and agent back to back in each (which goes
first alternates), so a drift of the shared machine hits both sides of a pair
alike. Each round gives a pair ratio (agent / bare throughput, and bare / agent
server CPU per request, read from /proc for the server's process group, the
agent's threads included); the figures are the medians of those pair ratios,
with their spread (lowest and highest round), and the medians of the rates.

Before the servers, the agent's own cost per request is measured in-process:
a trivial ASGI app and a trivial WSGI app, each driven directly with a
synthetic scope/environ, bare and wrapped in the agent's inbound middleware
(`InboundASGI`, `InboundWSGI`, with a fresh `AgentMetrics` and the lane state
a booted agent has), batches alternating in the same run; the figure is the
difference of the fastest batches, in microseconds per request.

Run: `.venv/bin/python bench/agent_overhead.py`. The last line is one JSON
object: {"fastapi": {"bare_rps", "agent_rps", "ratio", "bare_cpu_us",
"agent_cpu_us", "agent_cost_us", "cpu_ratio", "ratio_spread", "cpu_ratio_spread",
"rounds"}, "flask": {...}, "in_process": {"asgi_bare_us", "asgi_agent_us",
"asgi_cost_us", "wsgi_bare_us", ...}, "ratio": <the lower throughput ratio>,
"cpu_ratio": <the lower CPU ratio>, "loadavg": <the 1-minute load average at the
start and at the end>}. `--rounds N` sets the number of rounds (default 10).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = {"fastapi": 6_000, "flask": 3_000}  # per round and side: a few seconds each
CONCURRENCY = {"fastapi": 32, "flask": 8}
ROUNDS = 10
WARMUP_REQUESTS = 1_000
TOKEN = "bench-token-0123456789"

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/hello/{name}")
def hello(name: str) -> dict[str, str]:
    return {"hello": name}
"""

FLASK_APP = """
from flask import Flask

app = Flask(__name__)


@app.get("/hello/<name>")
def hello(name: str) -> dict[str, str]:
    return {"hello": name}
"""


# -- load generator (runs in its own process) ---------------------------------------------


async def _connection(port: int, count: int) -> None:
    """`count` requests, on one keep-alive connection while the server keeps it open."""
    request = f"GET /hello/world HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    reader = writer = None
    for _ in range(count):
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:40]!r}")
        length, close = 0, False
        for line in head.split(b"\r\n"):
            lower = line.lower()
            if lower.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
            elif lower.startswith(b"connection:") and b"close" in lower:
                close = True
        await reader.readexactly(length)
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _load(port: int, total: int, concurrency: int) -> float:
    per_connection = total // concurrency
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, per_connection) for _ in range(concurrency)))
    return per_connection * concurrency / (time.perf_counter() - started)


def loadgen_main(port: int, total: int, concurrency: int) -> None:
    print(json.dumps({"rps": asyncio.run(_load(port, total, concurrency))}))


def run_load(port: int, total: int, concurrency: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", str(port), str(total), str(concurrency)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rps"])


# -- in-process: the inbound middleware alone -------------------------------------------------

IN_PROCESS_BATCH = 5_000
IN_PROCESS_BATCHES = 15


class _Route:
    """What Starlette leaves in `scope["route"]` once routing matched."""

    path = "/hello/{name}"


def _asgi_scope() -> dict[str, object]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello/world",
        "raw_path": b"/hello/world",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "route": _Route(),
    }


def _wsgi_environ() -> dict[str, object]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/hello/world",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "tidegate.route": "/hello/<name>",  # what a framework hook leaves once routing matched
    }


def _fastest_us(run_bare, run_agent) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The fastest batch of each, in us per request, batches alternating so a drift hits both alike."""
    bare: list[float] = []
    agent: list[float] = []
    for batch in range(IN_PROCESS_BATCHES):
        for runner, into in ((run_bare, bare), (run_agent, agent)) if batch % 2 == 0 else ((run_agent, agent), (run_bare, bare)):
            started = time.perf_counter()
            runner(IN_PROCESS_BATCH)
            into.append((time.perf_counter() - started) / IN_PROCESS_BATCH * 1e6)
    return min(bare), min(agent)


def in_process_costs() -> dict[str, float]:
    """The inbound middleware's own cost per request, ASGI and WSGI, against the bare trivial app."""
    from tidegate.agent import lanes
    from tidegate.agent.instrumentation.asgi import InboundASGI
    from tidegate.agent.instrumentation.wsgi import InboundWSGI
    from tidegate.agent.metrics import AgentMetrics
    from tidegate.core.rulebook import RuleBook

    async def asgi_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"hello":"world"}'})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message) -> None:  # type: ignore[no-untyped-def]
        pass

    def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"hello":"world"}']

    def start_response(status, headers, exc_info=None) -> None:  # type: ignore[no-untyped-def]
        pass

    lanes.install(RuleBook(), "bench")  # as a booted agent has it: no lane rule in force
    try:
        wrapped_asgi = InboundASGI(asgi_app, AgentMetrics())
        wrapped_wsgi = InboundWSGI(wsgi_app, AgentMetrics())
        loop = asyncio.new_event_loop()

        def asgi_runner(app):  # type: ignore[no-untyped-def]
            async def many(count: int) -> None:
                for _ in range(count):
                    await app(_asgi_scope(), receive, send)

            return lambda count: loop.run_until_complete(many(count))

        def wsgi_runner(app):  # type: ignore[no-untyped-def]
            def many(count: int) -> None:
                for _ in range(count):
                    body = app(_wsgi_environ(), start_response)
                    for _chunk in body:
                        pass
                    close = getattr(body, "close", None)
                    if close is not None:  # as every WSGI server does once the body was sent (PEP 3333)
                        close()

            return many

        try:
            asgi_bare, asgi_agent = _fastest_us(asgi_runner(asgi_app), asgi_runner(wrapped_asgi))
        finally:
            loop.close()
        wsgi_bare, wsgi_agent = _fastest_us(wsgi_runner(wsgi_app), wsgi_runner(wrapped_wsgi))
    finally:
        lanes.uninstall()
    return {
        "asgi_bare_us": round(asgi_bare, 2),
        "asgi_agent_us": round(asgi_agent, 2),
        "asgi_cost_us": round(asgi_agent - asgi_bare, 2),
        "wsgi_bare_us": round(wsgi_bare, 2),
        "wsgi_agent_us": round(wsgi_agent, 2),
        "wsgi_cost_us": round(wsgi_agent - wsgi_bare, 2),
    }


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"agent_overhead: timed out waiting for {what}")


def accepting(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return True


def start(args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group `pgid`
    (a server and its workers; the agent's threads are inside them)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tidegate_run(service: str, control_port: int, command: list[str]) -> list[str]:
    control = f"http://127.0.0.1:{control_port}"
    return [sys.executable, "-m", "tidegate", "run", "--service", service, "--control", control, "--token", TOKEN, "--", *command]


def servers(bin_dir: Path, pair: str, port: int) -> list[str]:
    """The command line of one of the pair's servers, listening on `port`."""
    if pair == "fastapi":
        return [
            str(bin_dir / "uvicorn"),
            "hello_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    return [str(bin_dir / "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning", "hello_flask:app"]


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def spread(values: list[float]) -> list[float]:
    return [round(min(values), 4), round(max(values), 4)]


def main(rounds_wanted: int = ROUNDS) -> None:
    load_at_start = loadavg()
    in_process = in_process_costs()
    for kind in ("asgi", "wsgi"):
        print(
            f"in-process {kind.upper()} middleware: anchor (bare trivial app) {in_process[f'{kind}_bare_us']:.2f} us/request, "
            f"wrapped {in_process[f'{kind}_agent_us']:.2f} us/request: the agent's own cost {in_process[f'{kind}_cost_us']:.2f} us/request"
        )
    work = Path(tempfile.mkdtemp(prefix="tidegate-bench-agent-"))
    (work / "hello_app.py").write_text(APP)
    (work / "hello_flask.py").write_text(FLASK_APP)
    bin_dir = Path(sys.executable).parent
    control_port = free_port()
    pairs = ("fastapi", "flask")
    ports = {(pair, kind): free_port() for pair in pairs for kind in ("bare", "agent")}
    procs = []
    groups: dict[tuple[str, str], int] = {}
    results: dict[str, dict[str, float]] = {}
    try:
        control = [
            sys.executable,
            "-m",
            "tidegate",
            "control",
            "--port",
            str(control_port),
            "--data",
            str(work / "control"),
            "--token",
            TOKEN,
        ]
        procs.append(start(control, work / "control.log", work))
        wait_for(lambda: accepting(control_port), "the control plane")
        for pair in pairs:
            procs.append(start(servers(bin_dir, pair, ports[pair, "bare"]), work / f"{pair}-bare.log", work))
            groups[pair, "bare"] = procs[-1].pid
            agent_command = tidegate_run(f"bench-{pair}", control_port, servers(bin_dir, pair, ports[pair, "agent"]))
            procs.append(start(agent_command, work / f"{pair}-agent.log", work))
            groups[pair, "agent"] = procs[-1].pid
        for pair in pairs:
            wait_for(lambda: accepting(ports[pair, "bare"]), f"the bare {pair} server")
            wait_for(lambda: f"registered bench-{pair}" in (work / f"{pair}-agent.log").read_text(), f"the {pair} agent's registration")
            for kind in ("bare", "agent"):
                run_load(ports[pair, kind], WARMUP_REQUESTS, CONCURRENCY[pair])
        rounds: dict[tuple[str, str], list[float]] = {key: [] for key in ports}
        cpu_us: dict[tuple[str, str], list[float]] = {key: [] for key in ports}
        for round_number in range(rounds_wanted):
            for pair in pairs:
                # Alternate which side goes first, so a drift of the shared machine hits both alike.
                order = ("bare", "agent") if round_number % 2 == 0 else ("agent", "bare")
                for kind in order:
                    before = group_cpu_s(groups[pair, kind])
                    rounds[pair, kind].append(run_load(ports[pair, kind], REQUESTS[pair], CONCURRENCY[pair]))
                    cpu_us[pair, kind].append((group_cpu_s(groups[pair, kind]) - before) / REQUESTS[pair] * 1e6)
                print(
                    f"round {round_number + 1} {pair}: bare {rounds[pair, 'bare'][-1]:,.0f} req/s "
                    f"({cpu_us[pair, 'bare'][-1]:.0f} us CPU/request), agent {rounds[pair, 'agent'][-1]:,.0f} req/s "
                    f"({cpu_us[pair, 'agent'][-1]:.0f} us CPU/request): ratio {rounds[pair, 'agent'][-1] / rounds[pair, 'bare'][-1]:.3f}, "
                    f"CPU ratio {cpu_us[pair, 'bare'][-1] / cpu_us[pair, 'agent'][-1]:.3f}"
                )
    finally:
        for proc in reversed(procs):
            stop(proc)
    anchors = {"fastapi": "bare uvicorn + FastAPI", "flask": "bare gunicorn (1 sync worker) + Flask"}
    for pair in pairs:
        bare_rps, agent_rps = statistics.median(rounds[pair, "bare"]), statistics.median(rounds[pair, "agent"])
        bare_cpu, agent_cpu = statistics.median(cpu_us[pair, "bare"]), statistics.median(cpu_us[pair, "agent"])
        # Each round's own pair: the two sides ran back to back, under the same load of the machine.
        ratios = [agent / bare for bare, agent in zip(rounds[pair, "bare"], rounds[pair, "agent"])]
        cpu_ratios = [bare / agent for bare, agent in zip(cpu_us[pair, "bare"], cpu_us[pair, "agent"])]
        ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
        results[pair] = {
            "bare_rps": round(bare_rps, 1),
            "agent_rps": round(agent_rps, 1),
            "ratio": round(ratio, 4),
            "bare_cpu_us": round(bare_cpu, 1),
            "agent_cpu_us": round(agent_cpu, 1),
            "agent_cost_us": round(agent_cpu - bare_cpu, 1),
            "cpu_ratio": round(cpu_ratio, 4),
            "ratio_spread": spread(ratios),
            "cpu_ratio_spread": spread(cpu_ratios),
            "rounds": len(ratios),
        }
        print(
            f"{pair}: anchor ({anchors[pair]}) {bare_rps:,.0f} req/s, {bare_cpu:.0f} us CPU/request; under tidegate run "
            f"{agent_rps:,.0f} req/s, {agent_cpu:.0f} us CPU/request (+{agent_cpu - bare_cpu:.1f} us); "
            f"throughput ratio {ratio:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}), CPU-efficiency ratio "
            f"{cpu_ratio:.3f} (rounds {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f}); medians of {len(ratios)} paired rounds (target >= 0.95)"
        )
    # The CPU-efficiency ratio (server CPU per request, bare / agent) is the figure the shared machine moves
    # least: throughput also depends on how much of a core each server got during its round.
    worst = {key: min(r[key] for r in results.values()) for key in ("ratio", "cpu_ratio")}
    load = [load_at_start, loadavg()]
    print(f"load average (1 min) at the start {load[0]}, at the end {load[1]} (2 cores here)")
    print(json.dumps({**results, "in_process": in_process, **worst, "loadavg": load}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--loadgen":
        loadgen_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--rounds":
        main(int(sys.argv[2]))
    else:
        main()
