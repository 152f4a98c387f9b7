"""Connections to upstream instances: one asyncio protocol each, a keep-alive pool per instance address.

An `UpstreamConnection` parses responses with httptools and hands each event
to the exchange it serves (`proxy.Exchange`); when a response ends on a
connection both sides keep alive it goes back to the `Pool` for the next
request to that address. Flow control runs both ways: a slow upstream (its
write buffer over the high mark) pauses reading from the client, a slow client
pauses reading from the upstream. The pool drops an address's idle
connections when that instance drains.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

#: Idle connections kept per instance address (more are closed when they come back).
MAX_IDLE_PER_ADDRESS = 512
#: An idle pooled connection older than this is closed rather than reused (upstreams time them out too).
IDLE_TIMEOUT_S = 30.0

Address = tuple[str, int]


class Side(Protocol):
    """The client side of a connection (`proxy.ClientConnection`): what flow control and tunnels call."""

    def write(self, data: bytes, /) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Exchange(Protocol):
    """What a connection tells the exchange it serves (`proxy.Exchange`)."""

    #: The response passes to the client byte for byte (set here when `raw_allowed()` and the head allow it).
    raw: bool

    def raw_allowed(self) -> bool: ...
    @property
    def client(self) -> Side: ...
    def upstream_head(self, connection: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]], /) -> None: ...
    def upstream_body(self, body: bytes, /) -> None: ...
    def upstream_done(self, connection: UpstreamConnection, keep_alive: bool, /) -> None: ...
    def upstream_upgraded(self, connection: UpstreamConnection, rest: bytes, /) -> None: ...
    def upstream_failed(self, connection: UpstreamConnection, why: str, /) -> None: ...
    def upstream_lost(self, connection: UpstreamConnection, /) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to one instance; serves one exchange at a time."""

    __slots__ = (
        "pool",
        "address",
        "transport",
        "parser",
        "exchange",
        "reused",
        "received",
        "closed",
        "idle_since",
        "status",
        "headers",
        "tunnel",
        "heading",
    )

    def __init__(self, pool: Pool, address: Address) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        #: Whether this connection served an earlier exchange (a close before any byte is then a stale keep-alive).
        self.reused = False
        #: Whether any byte of the current exchange's response arrived.
        self.received = False
        self.closed = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        #: The client side of an upgraded connection (bytes pass through untouched).
        self.tunnel: Side | None = None
        #: No byte of the current response has been looked at yet.
        self.heading = False

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        exchange = self.exchange
        if exchange is None:  # bytes on an idle connection: nothing may come; drop it
            self.close()
            return
        self.received = True
        client = exchange.client
        client.cork()
        try:
            if self.heading:
                self.heading = False
                if exchange.raw_allowed() and raw_framing(data):
                    exchange.raw = True
            if exchange.raw:
                client.write(data)
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.tunnel is not None:
                if offset < len(data):
                    self.tunnel.write(data[offset:])
            elif self.exchange is not None:
                self.exchange.upstream_upgraded(self, data[offset:])
        except httptools.HttpParserError as error:
            if self.exchange is not None:
                self.exchange.upstream_failed(self, f"malformed response: {error}")
            self.close()
        finally:
            client.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
            return
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self)

    def pause_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.client.pause_reading()
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.client.resume_reading()
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            self.status = self.parser.get_status_code()
            exchange.upstream_head(self, self.status, self.headers)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_done(self, self.parser.should_keep_alive())

    # -- what the exchange calls -------------------------------------------------------------

    def send(self, exchange: Exchange, data: bytes) -> None:
        self.exchange = exchange
        self.received = False
        self.heading = True
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.resume_reading()

    def release(self, keep_alive: bool, now: float) -> None:
        """The exchange ended: back to the pool when both sides keep it alive, else closed."""
        self.exchange = None
        if not keep_alive or self.closed:
            self.close()
            return
        self.reused = True
        self.idle_since = now
        self.pool.give(self)

    def close(self) -> None:
        self.exchange = None
        transport = self.transport
        if transport is not None and not self.closed:
            self.closed = True
            transport.close()
        self.pool.forget(self)


_RAW_REFUSED = (b"\nkeep-alive:", b"\nproxy-connection:", b"\ntrailer:", b"\nupgrade:", b"\nx-tidegate-draining:")


def raw_framing(data: bytes) -> bool:
    """Whether a response starting `data` may pass to the client byte for byte: an HTTP/1.1 head,
    wholly in `data`, with a final status, framed by content-length or chunked (not both), and no
    header the gateway must drop or act on (hop-by-hop ones other than `connection: keep-alive`,
    `x-tidegate-draining`). Anything else takes the parsed path, which rebuilds the head."""
    if not data.startswith(b"HTTP/1.1 ") or data[9:10] not in (b"2", b"3", b"4", b"5"):
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[: end + 2].lower()
    for token in _RAW_REFUSED:
        if token in head:
            return False
    at = head.find(b"\nconnection:")
    if at >= 0 and (not head.startswith(b"\nconnection: keep-alive\r\n", at) or head.find(b"\nconnection:", at + 1) >= 0):
        return False
    length = b"\ncontent-length:" in head
    at = head.find(b"\ntransfer-encoding:")
    if at < 0:
        return length
    return not length and head.startswith(b"\ntransfer-encoding: chunked\r\n", at) and head.find(b"\ntransfer-encoding:", at + 1) < 0


class Pool:
    """Idle keep-alive connections by instance address; a stack, so the warmest one is reused first."""

    __slots__ = ("_idle", "loop", "opened", "failed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._idle: dict[Address, list[UpstreamConnection]] = {}
        #: Connections opened, and connects that failed, since start (the metrics read them).
        self.opened = 0
        self.failed = 0

    def take(self, address: Address, now: float) -> UpstreamConnection | None:
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_TIMEOUT_S:
                return connection
            connection.close()
        return None

    def give(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.address)
        if idle is None:
            idle = self._idle[connection.address] = []
        if len(idle) >= MAX_IDLE_PER_ADDRESS:
            connection.close()
            return
        idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    def drop(self, address: Address) -> int:
        """Close every idle connection to `address` (its instance drains); how many."""
        idle = self._idle.pop(address, [])
        for connection in idle:
            connection.close()
        return len(idle)

    def sweep(self, now: float) -> None:
        """Close idle connections past IDLE_TIMEOUT_S."""
        for address, idle in list(self._idle.items()):
            stale = [c for c in idle if now - c.idle_since >= IDLE_TIMEOUT_S]
            for connection in stale:
                connection.close()
            if not self._idle.get(address):
                self._idle.pop(address, None)

    def sizes(self) -> dict[str, int]:
        """Idle connections per address ("host:port")."""
        return {f"{host}:{port}": len(idle) for (host, port), idle in self._idle.items() if idle}

    def close_all(self) -> None:
        for address in list(self._idle):
            self.drop(address)
