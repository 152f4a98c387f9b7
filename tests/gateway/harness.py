"""Real sockets for the gateway tests: a scriptable upstream on a thread, the gateway as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.procs import free_port, free_port_run

PYTHON = sys.executable


class Upstream:
    """An HTTP/1.1 upstream on its own thread and loop. Paths:
    /echo (method, target and headers back), /big?n=BYTES (a chunked download), /slow?s=SECONDS,
    /reset-before (closes without answering), /reset-mid (half a body, then a reset), /drain?who=NAME
    (NAME answers with x-tidegate-draining), /ws (answers an Upgrade with 101 and echoes bytes), anything
    else: 200 with its name. Every answer carries `x-instance: <name>`."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.connections = 0
        self.requests = 0
        self.seen: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(5)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self.loop.run_until_complete(open_server())
        started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(close)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readline()).strip(), 16)
                        if size == 0:
                            await reader.readline()
                            break
                        parts.append(await reader.readexactly(size))
                        await reader.readline()
                    body = b"".join(parts)
                self.requests += 1
                self.seen.append({"method": method, "target": target, **headers})
                path, _, query = target.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                head = f"x-instance: {self.name}\r\n"
                if path == "/reset-before":
                    writer.transport.abort()
                    return
                if path == "/reset-mid":
                    writer.write(f"HTTP/1.1 200 OK\r\n{head}content-length: 100000\r\n\r\n".encode() + b"x" * 1000)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.transport.abort()
                    return
                if path == "/slow":
                    await asyncio.sleep(float(params.get("s", "1")))
                if path == "/big":
                    n = int(params.get("n", "1000000"))
                    writer.write(f"HTTP/1.1 200 OK\r\n{head}transfer-encoding: chunked\r\n\r\n".encode())
                    chunk = b"y" * 65536
                    sent = 0
                    while sent < n:
                        piece = chunk[: min(len(chunk), n - sent)]
                        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        sent += len(piece)
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                if path == "/ws":
                    writer.write(f"HTTP/1.1 101 Switching Protocols\r\n{head}upgrade: websocket\r\nconnection: upgrade\r\n\r\n".encode())
                    await writer.drain()
                    while True:
                        data = await reader.read(65536)
                        if not data:
                            return
                        writer.write(data)
                        await writer.drain()
                if path == "/drain" and params.get("who", self.name) == self.name:
                    head += "x-tidegate-draining: 1\r\n"
                if path in ("/echo", "/upload"):
                    payload = repr(sorted({"method": method, "target": target, **headers}.items())).encode()
                    if path == "/upload":
                        payload = b"%d" % len(body)
                else:
                    payload = self.name.encode()
                writer.write(f"HTTP/1.1 200 OK\r\n{head}content-length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ValueError):
            return
        finally:
            writer.close()


class GatewayProcess:
    """`tidegate gateway` as a real process on a free port, with a routes file."""

    def __init__(self, tmp: Path, routes: str, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        """`routes` "" = no routes file (a gateway fed by a control plane); `port` a port to share (SO_REUSEPORT)."""
        self.port = port or free_port()
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        self.admin_port = free_port_run(workers)  # worker i answers on --admin-port + i: all of them free
        self.routes = tmp / "routes.yaml"
        self.log = tmp / f"gateway-{self.port}-{self.admin_port}.log"
        command = [PYTHON, "-m", "tidegate", "gateway", "--port", str(self.port), "--admin-port", str(self.admin_port)]
        if routes:
            self.routes.write_text(routes)
            command += ["--routes", str(self.routes)]
        command += list(args)
        self.process = subprocess.Popen(
            command,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        for worker in range(workers):  # worker i answers on --admin-port + i, each in its own time
            self._wait_ready(self.admin_port + worker)

    def _wait_ready(self, admin_port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5).text

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh connection and read until the gateway closes it (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def route(name: str, service: str, prefix: str = "/", **spec: object) -> str:
    body = {"match": {"path": {"prefix": prefix}}, "service": service, **spec}
    return document("GatewayRoute", name, body)


def document(kind: str, name: str, spec: object, api: str = "traffic.opensergo.io/v1alpha1") -> str:
    import yaml

    return "---\n" + yaml.safe_dump({"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec})


def upstreams(*members: Upstream, service: str = "orders", tag: str = "") -> Iterator[str]:
    for member in members:
        yield "--upstream"
        yield f"{service}=127.0.0.1:{member.port}" + (f"@{tag}" if tag else "")
