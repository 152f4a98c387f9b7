"""The admin port: `GET /metrics` (Prometheus text), `/ready`, `/live` (with the worker's pid), `/routes` (the routes in force, JSON).

With `--workers N`, worker i has its own admin port (`--admin-port` + i)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.gateway.engine import Gateway
    from tidegate.gateway.sources import Sources

_MAX_REQUEST = 8192


class AdminProtocol(asyncio.Protocol):
    """One admin request per connection (small, read-only; loopback by default)."""

    def __init__(self, gateway: Gateway, sources: Sources) -> None:
        self.gateway = gateway
        self.sources = sources
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_REQUEST and self.transport is not None:
                self.transport.close()
            return
        line = self.buffer.split(b"\r\n", 1)[0].split()
        path = line[1].decode("latin-1").split("?", 1)[0] if len(line) >= 2 else "/"
        gateway = self.gateway
        status, ctype, body = 404, "text/plain", b"not found\n"
        if path == "/metrics":
            status, ctype, body = 200, "text/plain; version=0.0.4", gateway.metrics.render().encode()
        elif path == "/live":
            status, ctype, body = 200, "application/json", json.dumps({"live": True, "pid": os.getpid()}).encode()
        elif path == "/ready":
            ready = not gateway.draining
            status, ctype, body = (
                (200 if ready else 503),
                "application/json",
                json.dumps({"ready": ready, "draining": gateway.draining}).encode(),
            )
        elif path == "/routes":
            routes = [
                {"name": r.name, "service": r.service, "match": f"{r.kind}:{r.value}", "hosts": list(r.rule.hosts), "resource": r.resource}
                for r in gateway.table.routes
            ]
            status, ctype, body = 200, "application/json", json.dumps({"routes": routes}).encode()
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        if self.transport is not None:
            self.transport.write(head.encode() + body)
            self.transport.close()
