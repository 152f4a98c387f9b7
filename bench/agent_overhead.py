"""Agent overhead: requests per second of a hello-world FastAPI app, bare vs under `tidegate run`.

Anchor: the same app on the same uvicorn (one worker, access log off), without
the agent, measured in the same run. The agent run has a control plane up, so
the instance registers, heartbeats and watches as in production. Both servers
run side by side; a load generator in a separate process (keep-alive HTTP/1.1
over raw asyncio streams, so the client is cheap and the server is the
bottleneck) sends a fixed number of requests from N concurrent connections,
alternating bare and agent rounds three times. Figures are the medians.

Run: `.venv/bin/python bench/agent_overhead.py`. The last line is one JSON
object: {"bare_rps": ..., "agent_rps": ..., "ratio": ...}.
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

REQUESTS = 12_000
CONCURRENCY = 32
ROUNDS = 3
WARMUP_REQUESTS = 1_000
TOKEN = "bench-token"

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/hello/{name}")
def hello(name: str) -> dict[str, str]:
    return {"hello": name}
"""


# -- load generator (runs in its own process) ---------------------------------------------


async def _connection(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /hello/world HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:40]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
    writer.close()


async def _load(port: int, total: int, concurrency: int) -> float:
    per_connection = total // concurrency
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, per_connection) for _ in range(concurrency)))
    return per_connection * concurrency / (time.perf_counter() - started)


def loadgen_main(port: int, total: int, concurrency: int) -> None:
    print(json.dumps({"rps": asyncio.run(_load(port, total, concurrency))}))


def run_load(port: int, total: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", str(port), str(total), str(CONCURRENCY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rps"])


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


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tidegate-bench-agent-"))
    (work / "hello_app.py").write_text(APP)
    bin_dir = Path(sys.executable).parent
    control_port, bare_port, agent_port = free_port(), free_port(), free_port()
    uvicorn = [str(bin_dir / "uvicorn"), "hello_app:app", "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    procs = []
    try:
        procs.append(
            start(
                [
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
                ],
                work / "control.log",
                work,
            )
        )
        wait_for(lambda: accepting(control_port), "the control plane")
        procs.append(start([*uvicorn, "--port", str(bare_port)], work / "bare.log", work))
        procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "tidegate",
                    "run",
                    "--service",
                    "bench",
                    "--control",
                    f"http://127.0.0.1:{control_port}",
                    "--token",
                    TOKEN,
                    "--",
                    *uvicorn,
                    "--port",
                    str(agent_port),
                ],
                work / "agent.log",
                work,
            )
        )
        wait_for(lambda: accepting(bare_port), "the bare server")
        wait_for(lambda: "registered bench" in (work / "agent.log").read_text(), "the agent's registration")
        for port in (bare_port, agent_port):
            run_load(port, WARMUP_REQUESTS)
        bare, agent = [], []
        for round_number in range(ROUNDS):
            bare.append(run_load(bare_port, REQUESTS))
            agent.append(run_load(agent_port, REQUESTS))
            print(f"round {round_number + 1}: bare {bare[-1]:,.0f} req/s, agent {agent[-1]:,.0f} req/s")
    finally:
        for proc in reversed(procs):
            stop(proc)
    bare_rps, agent_rps = statistics.median(bare), statistics.median(agent)
    ratio = agent_rps / bare_rps
    print(f"anchor (bare uvicorn + FastAPI): {bare_rps:,.0f} req/s (median of {ROUNDS})")
    print(f"under tidegate run:              {agent_rps:,.0f} req/s (median of {ROUNDS})")
    print(f"ratio agent/bare: {ratio:.3f} (target >= 0.9)")
    print(json.dumps({"bare_rps": round(bare_rps, 1), "agent_rps": round(agent_rps, 1), "ratio": round(ratio, 4)}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--loadgen":
        loadgen_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
