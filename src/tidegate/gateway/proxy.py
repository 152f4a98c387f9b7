"""The client side of the data plane: one asyncio protocol per client connection, one `Exchange` per request.

A request reads one way: httptools parses the head (its size bounded: 414 for
the request line, 431 for the headers), the route table names the route (404
without one), the edge decides the lane (`edge.py`: the client's lane dropped
unless the route trusts it, then coloring and the route's canary), the route's
admission runs (429/503 with `Retry-After`), and the outbound pipeline
(`tidegate.agent.outbound.call`) routes the call to an instance of the
service (503 when none may take it). The head goes out on a pooled keep-alive
connection (`upstream.py`); request and response bodies stream through as
they come (content-length or chunked, never buffered whole), with flow
control both ways. A connect that fails is tried on another instance (the
pipeline's NOTHING_SENT); a pooled connection that closes before any byte of
the answer is replaced once; a response with `x-tidegate-draining` takes its
instance out of balancing and drops its idle connections. Timeouts: the
head must arrive within `header_timeout_s` (408: slowloris), an idle
keep-alive connection closes after `idle_timeout_s`, a connect slower than
the route's connect timeout moves on (504 when none is left), no response
head within the response timeout or no end within the request timeout is 504.
`Upgrade` requests (WebSocket) become a byte tunnel once the upstream answers 101.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from tidegate.agent.outbound.call import ErrorKind, OutboundCall
from tidegate.core.context import DRAINING_HEADER
from tidegate.core.governor import Entry
from tidegate.errors import BlockedError, NoInstanceError
from tidegate.gateway.routes import IDEMPOTENT, Route
from tidegate.gateway.upstream import UpstreamConnection

if TYPE_CHECKING:
    from tidegate.gateway.engine import Gateway

_DRAINING = DRAINING_HEADER.lower().encode()
# Request headers never passed on: hop-by-hop ones, and the ones the gateway writes itself.
_DROP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-for",
        b"forwarded",
        b"baggage",
        b"x-tidegate-consumer",
        b"x-tidegate-draining",
    }
)
# What `on_header` does with a request header, by lower-case name: absent -> passed on as is.
_H_DROP, _H_HOST, _H_LENGTH, _H_TE, _H_CONNECTION, _H_BAGGAGE, _H_XFF, _H_FORWARDED, _H_UPGRADE = range(9)
_REQUEST_KINDS = {name: _H_DROP for name in _DROP_REQUEST} | {
    b"host": _H_HOST,
    b"content-length": _H_LENGTH,
    b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION,
    b"baggage": _H_BAGGAGE,
    b"x-forwarded-for": _H_XFF,
    b"forwarded": _H_FORWARDED,
    b"upgrade": _H_UPGRADE,
}
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"trailer", b"upgrade", _DRAINING})
_REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_CHUNK_END = b"0\r\n\r\n"
#: How long an idle keep-alive connection stays open once the gateway drains (a request on it is answered with `connection: close`).
#: How long a refused client's further input is read and dropped before the connection closes.
LINGER_S = 1.0

# Where a client connection is (what its deadline means).
_READING = 0  # a request head is being read: past the deadline -> 408
_IDLE = 1  # keep-alive, between requests: past the deadline -> closed quietly
_BUSY = 2  # an exchange is running: its own deadlines apply


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing and answer `status`."""

    def __init__(self, status: int) -> None:
        self.status = status


def simple_response(status: int, body: bytes, close: bool, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete response the gateway answers itself (errors, refusals)."""
    head = [
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        % (status, _REASONS.get(status, b"Error"), len(body))
    ]
    for name, value in extra:
        head.append(name + b": " + value + b"\r\n")
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


class Head:
    """What `ClientConnection.on_header` collects of a request head in one pass over its headers."""

    __slots__ = ("passed", "host", "length", "chunked", "connection", "baggage", "forwarded_for", "forwarded", "upgrade")

    def __init__(self) -> None:
        #: name, ": ", value, CRLF of every header passed on upstream as it came.
        self.passed: list[bytes] = []
        self.host = b""
        self.length = b""
        self.chunked = False
        self.connection = b""
        self.baggage = ""
        self.forwarded_for = b""
        self.forwarded = b""
        self.upgrade = b""


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests and runs their exchanges one after the other."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limits = gateway.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.peer_bytes = b""
        self.closed = False
        self.phase = _READING
        self.deadline = 0.0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        # What `on_header` collected of the head being read (see `Head`).
        self.head = Head()
        self.exchange: Exchange | None = None  # the exchange answering now
        self.queued: deque[Exchange] = deque()  # pipelined requests waiting their turn
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.tunnel: UpstreamConnection | None = None
        self.reading_paused = False
        self.begun = False  # a request's first byte arrived (its head is being read)
        self.upgrading: Exchange | None = None  # an Upgrade request waiting for the upstream's 101
        self.lingering = False
        self.out: list[bytes] | None = None  # writes held while corked

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.peer_bytes = self.peer.encode()
        gateway = self.gateway
        gateway.connections.add(self)
        self.deadline = gateway.loop.time() + self.limits.header_timeout_s
        if gateway.draining:  # accepted as the listener closed: its request (if one comes) is answered, then it closes
            self.drain()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        if self.lingering:  # refused: what the client still sends is read and dropped until the close
            return
        if self.upgrading is not None:  # bytes after an Upgrade request, before the upstream said 101
            self.upgrading.upgrade_rest += data
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            exchange = self.parsing or self.exchange
            if exchange is not None:
                self.parsing = None
                self.upgrading = exchange
                exchange.upgrade_rest = data[offset:]
                exchange.client_done()
        except httptools.HttpParserError as error:
            cause = error.__context__
            self.refuse(cause.status if isinstance(cause, _Refused) else 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.connections.discard(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        exchange = self.exchange
        if exchange is not None:
            exchange.client_lost()
        for queued in self.queued:
            queued.abandon()
        self.queued.clear()

    def pause_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.begun = True
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.head = Head()
        if self.phase == _IDLE:
            self.phase = _READING
            self.deadline = self.gateway.loop.time() + self.limits.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_url_bytes:
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_header_bytes or len(self.headers) >= self.limits.max_headers:
            raise _Refused(431)
        self.headers.append((name, value))
        kind = _REQUEST_KINDS.get(name.lower())
        head = self.head
        if kind is None:
            head.passed += (name, b": ", value, b"\r\n")
        elif kind == _H_HOST:
            head.host = value
            head.passed += (name, b": ", value, b"\r\n")
        elif kind == _H_LENGTH:
            head.length = value
            head.passed += (name, b": ", value, b"\r\n")
        elif kind == _H_TE:
            if b"chunked" in value.lower():
                head.chunked = True
        elif kind == _H_CONNECTION:
            head.connection += value.lower()
        elif kind == _H_BAGGAGE:
            text = value.decode("latin-1")
            head.baggage = f"{head.baggage},{text}" if head.baggage else text
        elif kind == _H_XFF:
            head.forwarded_for = value + b", "
        elif kind == _H_FORWARDED:
            head.forwarded = value + b", "
        elif kind == _H_UPGRADE:
            head.upgrade = value

    def on_headers_complete(self) -> None:
        parser = self.parser
        exchange = Exchange(self, parser.get_method(), self.url, self.headers, parser.should_keep_alive(), parser.get_http_version())
        exchange.parsed = self.head
        self.parsing = exchange
        self.begun = False
        if self.exchange is None:
            self.phase = _BUSY
            self.exchange = exchange
            exchange.start()
        else:
            self.queued.append(exchange)
            self.pause_reading()  # one pipelined request waits; read no further until its turn

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.client_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            exchange.client_done()

    # -- what exchanges call -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        out = self.out
        if out is not None:
            out.append(data)
            return
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def cork(self) -> None:
        """Hold writes until `uncork`: a response that arrives in one read leaves in one write (one syscall)."""
        if self.out is None:
            self.out = []

    def uncork(self) -> None:
        out = self.out
        if out is None:
            return
        self.out = None
        if out:
            transport = self.transport
            if transport is not None and not self.closed:
                transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def finished(self, exchange: Exchange, keep_alive: bool) -> None:
        """`exchange` answered; the next pipelined one starts, or the connection idles or closes."""
        if self.exchange is exchange:
            self.exchange = None
        if not keep_alive or self.gateway.draining:
            self.close()
            return
        if self.queued:
            following = self.queued.popleft()
            self.exchange = following
            following.start()
            if not self.queued:
                self.resume_reading()
            return
        self.phase = _IDLE
        self.deadline = self.gateway.loop.time() + self.limits.idle_timeout_s
        self.resume_reading()

    def refuse(self, status: int) -> None:
        """Malformed or oversized input: answer `status` (when no response has begun) and close."""
        exchange = self.exchange
        if exchange is None or not exchange.responded:
            if exchange is not None:
                exchange.abandon()
                self.exchange = None
            self.gateway.metrics.count_refused(status)
            self.write(simple_response(status, _REASONS.get(status, b"Error") + b"\n", True))
        self.linger()

    def linger(self) -> None:
        """Close after a refusal without losing the answer: stop writing, drop what the client still
        sends for up to `LINGER_S` (a close with unread input would reset the connection, answer and all)."""
        transport = self.transport
        if transport is None or self.closed or self.lingering:
            return
        self.lingering = True
        self.phase = _IDLE
        self.deadline = self.gateway.loop.time() + LINGER_S
        self.resume_reading()
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except OSError:
            self.close()

    def close(self) -> None:
        self.uncork()
        transport = self.transport
        if transport is not None and not self.closed:
            self.closed = True
            transport.close()

    def expire(self, now: float) -> None:
        """The sweeper's check: a deadline passed."""
        phase = self.phase
        if phase == _BUSY:
            exchange = self.exchange
            if exchange is not None:
                exchange.expire(now)
            return
        if now < self.deadline:
            return
        if phase == _READING and self.begun:
            self.refuse(408)  # a head that did not arrive in time (a slowloris client trickling bytes)
        else:
            self.close()  # a connection that never sent a byte, or an idle keep-alive one

    def drain(self) -> None:
        """The gateway drains: a busy connection closes after its response (`connection: close`), an idle
        one after its next request's or within `drain_idle_s`: closing a keep-alive connection at once
        races a client that is sending on it right then (its request would be lost)."""
        if self.exchange is None and not self.queued and not self.begun:
            self.phase = _IDLE
            self.deadline = min(self.deadline, self.gateway.loop.time() + self.limits.drain_idle_s)


class Exchange:
    """One request and its response through the gateway."""

    __slots__ = (
        "client",
        "gateway",
        "method",
        "url",
        "headers",
        "client_keep_alive",
        "version",
        "route",
        "call",
        "admitted",
        "upstream",
        "head",
        "pending",
        "pending_bytes",
        "body_framing",
        "body_bytes",
        "request_done",
        "body_sent",
        "responded",
        "response_chunked",
        "response_close",
        "started",
        "response_deadline",
        "request_deadline",
        "connect_task",
        "status",
        "lane",
        "upgrade",
        "upgrade_rest",
        "ended",
        "replaced",
        "tries",
        "parsed",
        "raw",
    )

    def __init__(
        self, client: ClientConnection, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool, version: str
    ) -> None:
        self.client = client
        self.gateway = client.gateway
        self.method = method
        self.url = url
        self.headers = headers
        self.client_keep_alive = keep_alive
        self.version = version
        self.route: Route | None = None
        self.call: OutboundCall | None = None
        self.admitted: tuple[Entry, str] | None = None
        self.upstream: UpstreamConnection | None = None
        self.head = b""
        self.pending: list[bytes] = []  # body bytes read before the upstream connection is ready
        self.pending_bytes = 0
        self.body_framing = 0  # 0: no body, 1: content-length (raw), 2: chunked (re-framed)
        self.body_bytes = 0
        self.request_done = False
        self.body_sent = False
        self.responded = False
        self.response_chunked = False
        self.response_close = False
        self.started = self.gateway.loop.time()
        self.response_deadline = 0.0
        self.request_deadline = 0.0
        self.connect_task: asyncio.Task[None] | None = None
        self.status = 0
        self.lane = ""
        self.upgrade = False
        self.upgrade_rest = b""
        self.ended = False
        self.replaced = False
        self.tries = 0
        self.parsed = _NO_HEAD
        #: The upstream's response passes through byte for byte (its framing allows it; see `upstream.py`).
        self.raw = False

    # -- the request ---------------------------------------------------------------------------

    def start(self) -> None:
        """Route, color, admit, and send the head (the request's own turn on its connection)."""
        gateway = self.gateway
        limits = gateway.limits
        parsed = self.parsed
        host = parsed.host
        length = -1
        if parsed.length:
            try:
                length = int(parsed.length)
            except ValueError:
                self.fail_early(400, b"bad content-length\n")
                return
        if parsed.chunked:
            self.body_framing = 2
        elif length > 0:
            self.body_framing = 1
            if length > limits.max_body_bytes:
                self.fail_early(413, b"request body too large\n")
                return
        self.upgrade = b"upgrade" in parsed.connection and bool(parsed.upgrade)
        url = self.url
        qmark = url.find(b"?")
        raw_path = url if qmark < 0 else url[:qmark]
        query = b"" if qmark < 0 else url[qmark:]
        path = raw_path.decode("latin-1")
        hostname = host.decode("latin-1").lower()
        if hostname.startswith("["):
            hostname = hostname.split("]", 1)[0] + "]"
        else:
            hostname = hostname.partition(":")[0]
        edge = gateway.edge
        view = edge.view(self.method, path, self.headers, query)
        route = gateway.table.match(hostname, self.method, path, view.header_map)
        if route is None:
            self.fail_early(404, b"no route\n")
            return
        self.route = route
        decision = edge.decide(route, view, self.peer_ip, parsed.baggage)
        self.lane = decision.lane
        try:
            self.admitted = gateway.admission.enter_route(route, decision.lane, view, self.peer_ip)
        except BlockedError as error:
            self.refused(error)
            return
        try:
            call = gateway.pipeline.begin(
                route.service, lane=decision.routing_lane, inbound=view.request_view() if decision.needs_request else None
            )
        except BlockedError as error:
            self.refused(error)
            return
        except NoInstanceError:
            self.fail_early(503, b"no instance of " + route.service.encode() + b" may take the request\n", retry=True)
            return
        if call is None:
            self.fail_early(503, b"service " + route.service.encode() + b" is not registered\n", retry=True)
            return
        call.idempotent = self.method in IDEMPOTENT  # the pipeline retries a connection closed unanswered only then
        if call.refused is not None:
            self.refused(call.refused)
            return
        self.call = call
        target = route.upstream_path(path).encode("latin-1") + query if (route.strip or route.rewrite is not None) else url
        self.head = self.build_head(target, hostname, host, decision.baggage, call.headers)
        now = gateway.loop.time()
        timeout = route.request_timeout_s or limits.request_timeout_s
        self.request_deadline = now + timeout if timeout else 0.0
        if call.wait_s:
            gateway.loop.call_later(call.wait_s, self.attempt)
        else:
            self.attempt()

    @property
    def peer_ip(self) -> str:
        return self.client.peer

    def build_head(self, target: bytes, hostname: str, host: bytes, baggage: str, call_headers: tuple[tuple[str, str], ...]) -> bytes:
        gateway = self.gateway
        parsed = self.parsed
        parts = [self.method, b" ", target, b" HTTP/1.1\r\n"]
        parts += parsed.passed
        peer = self.client.peer_bytes
        scheme = gateway.scheme
        parts += (b"x-forwarded-for: ", parsed.forwarded_for, peer, b"\r\nx-forwarded-proto: ", scheme, b"\r\n")
        if host:
            parts += (b"x-forwarded-host: ", host, b"\r\n")
        node = b'"[' + peer + b']"' if b":" in peer else peer
        parts += (b"forwarded: ", parsed.forwarded, b"for=", node, b";proto=", scheme)
        if host:
            parts += (b';host="', host.replace(b'"', b""), b'"')
        parts.append(b"\r\n")
        if baggage:
            parts += (b"baggage: ", baggage.encode("latin-1", "replace"), b"\r\n")
        for name_s, value_s in call_headers:
            parts += (name_s.encode(), b": ", value_s.encode("latin-1", "replace"), b"\r\n")
        if self.upgrade:
            parts += (b"upgrade: ", parsed.upgrade, b"\r\nconnection: upgrade\r\n")
        elif self.body_framing == 2:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def client_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.gateway.limits.max_body_bytes:
            self.client.refuse(413)
            return
        if self.ended:
            return
        if self.body_framing == 2:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        upstream = self.upstream
        if upstream is not None and self.body_sent:
            upstream.write(body)
            return
        self.pending.append(body)
        self.pending_bytes += len(body)
        if self.pending_bytes > 65536:
            self.client.pause_reading()  # resumed once the upstream connection takes what is pending

    def client_done(self) -> None:
        self.request_done = True
        if self.ended:
            return
        if self.body_framing == 2:
            upstream = self.upstream
            if upstream is not None and self.body_sent:
                upstream.write(_CHUNK_END)
            else:
                self.pending.append(_CHUNK_END)

    # -- attempts ------------------------------------------------------------------------------

    def attempt(self) -> None:
        call = self.call
        if call is None or self.ended:
            return
        route = call.attempt()
        instance = route.instance
        address = (instance.host, instance.port)
        gateway = self.gateway
        now = gateway.loop.time()
        self.tries += 1
        connection = gateway.pool.take(address, now)
        if connection is not None:
            self.send_on(connection, now)
            return
        self.connect_task = gateway.loop.create_task(self.connect(address))

    async def connect(self, address: tuple[str, int]) -> None:
        gateway = self.gateway
        route = self.route
        timeout = (route.connect_timeout_s if route is not None else 0.0) or gateway.limits.connect_timeout_s
        pool = gateway.pool
        try:
            _, connection = await asyncio.wait_for(
                gateway.loop.create_connection(lambda: UpstreamConnection(pool, address), address[0], address[1]), timeout
            )
        except (TimeoutError, OSError) as error:
            self.connect_task = None
            pool.failed += 1
            gateway.metrics.count_connect_failure(address)
            if self.ended:
                return
            call = self.call
            if call is not None and call.failed(ErrorKind.NOTHING_SENT):
                self.attempt()
                return
            self.upstream_gave_up(504 if isinstance(error, asyncio.TimeoutError) else 502)
            return
        except asyncio.CancelledError:
            return
        self.connect_task = None
        pool.opened += 1
        if self.ended:
            connection.close()
            return
        self.send_on(connection, gateway.loop.time())

    def send_on(self, connection: UpstreamConnection, now: float) -> None:
        self.upstream = connection
        route = self.route
        timeout = (route.response_timeout_s if route is not None else 0.0) or self.gateway.limits.response_timeout_s
        self.response_deadline = now + timeout if timeout else 0.0
        pending = self.pending
        if pending and not self.replaced:
            connection.send(self, self.head + b"".join(pending))
        else:
            connection.send(self, self.head)
        self.body_sent = True
        if pending:
            self.pending = []
            self.pending_bytes = 0
            self.client.resume_reading()

    # -- the response --------------------------------------------------------------------------

    def raw_allowed(self) -> bool:
        """Whether the response may pass byte for byte (the client keeps HTTP/1.1 alive, nothing to add)."""
        return (
            self.client_keep_alive
            and self.version == "1.1"
            and self.method != b"HEAD"
            and not self.upgrade
            and not self.ended
            and not self.gateway.draining
            and not self.client.closed
        )

    def upstream_head(self, connection: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.ended:
            return
        if self.raw:  # the bytes went to the client as they came (`UpstreamConnection.data_received`)
            self.status = status
            call = self.call
            if call is not None:
                call.answered(status, None)
            self.responded = True
            self.response_deadline = 0.0
            return
        draining: str | None = None
        parts = [b"HTTP/1.1 %d " % status, _reason(status), b"\r\n"]
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in _DROP_RESPONSE:
                if lname == _DRAINING:
                    draining = value.decode("latin-1")
                continue
            if lname == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        self.status = status
        call = self.call
        if call is not None:
            call.answered(status, draining)
        if draining is not None:
            instance_address = connection.address
            self.gateway.pool.drop(instance_address)
        gateway = self.gateway
        close = not self.client_keep_alive or gateway.draining or self.client.closed
        if status == 101:
            parts.append(b"connection: upgrade\r\n")
        elif not has_length and status >= 200 and status not in (204, 304) and self.method != b"HEAD":
            if self.version == "1.1":
                self.response_chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                close = True
        if close and status != 101:
            parts.append(b"connection: close\r\n")
        self.response_close = close
        parts.append(b"\r\n")
        self.responded = True
        self.response_deadline = 0.0
        self.client.write(b"".join(parts))
        if self.method == b"HEAD" and status != 101:
            # httptools would wait for the body a HEAD response never has: end here, drop the connection.
            self.upstream = None
            connection.exchange = None
            connection.close()
            self.complete(keep_upstream=False, upstream=None)

    def upstream_body(self, body: bytes) -> None:
        if self.ended or self.raw:
            return
        if self.response_chunked:
            self.client.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.client.write(body)

    def upstream_done(self, connection: UpstreamConnection, keep_alive: bool) -> None:
        if self.ended:
            return
        if self.status == 101:  # the 101's head is the whole message: the tunnel starts here
            self.upstream_upgraded(connection, b"")
            return
        if self.response_chunked:
            self.client.write(_CHUNK_END)
        self.complete(keep_upstream=keep_alive and self.request_done, upstream=connection)

    def upstream_upgraded(self, connection: UpstreamConnection, rest: bytes) -> None:
        """The upstream answered 101: from now on bytes pass through both ways."""
        if self.status != 101 or not self.upgrade:
            self.upstream_failed(connection, "unexpected upgrade")
            return
        client = self.client
        if rest:
            client.write(rest)
        connection.exchange = None
        connection.tunnel = client
        client.tunnel = connection
        client.upgrading = None
        if self.upgrade_rest:
            connection.write(self.upgrade_rest)
            self.upgrade_rest = b""
        client.phase = _IDLE
        client.deadline = float("inf")
        self.finish_call()
        self.ended = True
        client.exchange = None
        client.resume_reading()
        self.gateway.metrics.observe(self, self.gateway.loop.time())

    def upstream_lost(self, connection: UpstreamConnection) -> None:
        """The upstream connection closed before the response ended."""
        if self.ended:
            return
        self.upstream = None
        if not self.responded:
            nothing = not connection.received
            if nothing and connection.reused and not self.replaced and self.method in IDEMPOTENT and self.retryable_body():
                # A pooled connection the server had closed: the same request on a fresh one, once
                # (idempotent ones only: the server may have read it as it closed, a POST could run twice).
                self.replaced = True
                self.connect_task = self.gateway.loop.create_task(self.connect(connection.address))
                return
            call = self.call
            if nothing and call is not None and call.failed(ErrorKind.CLOSED_IDLE if connection.reused else ErrorKind.OTHER):
                self.replaced = True
                self.attempt()
                return
            if self.retry_elsewhere():
                return
            self.upstream_gave_up(502)
            return
        # Mid-response: the client's response cannot be completed; close it so it sees the truncation.
        self.finish_call(error=True)
        self.status = 502 if not self.status else self.status
        self.ended = True
        self.gateway.metrics.observe(self, self.gateway.loop.time(), failed=True)
        self.client.exchange = None
        self.client.close()

    def upstream_failed(self, connection: UpstreamConnection, why: str) -> None:
        connection.exchange = None
        connection.close()
        self.upstream = None
        if self.ended:
            return
        if not self.responded:
            self.upstream_gave_up(502)
        else:
            self.finish_call(error=True)
            self.ended = True
            self.client.exchange = None
            self.client.close()

    def retryable_body(self) -> bool:
        return self.body_framing == 0 and not self.upgrade

    def retry_elsewhere(self) -> bool:
        """A route's retries: an idempotent request without a body, sent again as a new call."""
        route = self.route
        if route is None or self.tries >= route.attempts or self.method not in IDEMPOTENT or not self.retryable_body():
            return False
        self.finish_call(error=True)
        try:
            call = self.gateway.pipeline.begin(route.service, lane=self.lane)
        except (BlockedError, NoInstanceError):
            return False
        if call is None or call.refused is not None:
            return False
        call.idempotent = True  # only idempotent requests come here (checked above)
        self.call = call
        self.replaced = True
        self.attempt()
        return True

    def upstream_gave_up(self, status: int) -> None:
        """No response will come: answer `status` (the request did not get through)."""
        if self.retry_elsewhere():
            return
        self.finish_call(error=True)
        self.respond(status, b"upstream " + (b"timed out\n" if status == 504 else b"failed\n"))

    # -- endings -------------------------------------------------------------------------------

    def complete(self, keep_upstream: bool, upstream: UpstreamConnection | None) -> None:
        self.finish_call()
        self.ended = True
        gateway = self.gateway
        now = gateway.loop.time()
        if upstream is not None:
            self.upstream = None
            upstream.release(keep_upstream and not self.upgrade, now)
        gateway.metrics.observe(self, now)
        self.client.finished(self, not self.response_close and self.request_done)

    def finish_call(self, error: bool = False) -> None:
        call = self.call
        if call is not None:
            self.call = None
            if error and call.attempts and not call.ok:
                call.failed(ErrorKind.OTHER)
            call.finish()
        admitted = self.admitted
        if admitted is not None:
            self.admitted = None
            self.gateway.admission.leave_route(admitted, error or self.status >= 500)

    def refused(self, error: BlockedError) -> None:
        self.finish_call()
        retry = error.retry_after_s
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if retry is not None:
            extra = ((b"retry-after", str(max(1, int(retry) + (retry % 1 > 0))).encode()),)
        status = error.http_status
        self.respond(status, str(error).encode("utf-8", "replace") + b"\n", extra=extra)

    def fail_early(self, status: int, body: bytes, retry: bool = False) -> None:
        self.respond(status, body, extra=((b"retry-after", b"1"),) if retry else ())

    def respond(self, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """The gateway answers the request itself (no upstream response will be passed on)."""
        if self.ended:
            return
        self.finish_call(error=status >= 500)
        self.ended = True
        self.status = status
        self.responded = True
        gateway = self.gateway
        # A request whose body is still coming cannot be followed on this connection: close after.
        close = not self.client_keep_alive or gateway.draining or not self.request_done and self.body_framing != 0
        self.response_close = close
        self.client.write(simple_response(status, body, close, extra))
        gateway.metrics.observe(self, gateway.loop.time())
        self.client.finished(self, not close)

    def client_lost(self) -> None:
        """The client went away: stop everything this exchange started."""
        if self.ended:
            return
        self.ended = True
        task = self.connect_task
        if task is not None:
            task.cancel()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.close()
        self.finish_call(error=not self.responded)
        self.status = self.status or 499
        self.gateway.metrics.observe(self, self.gateway.loop.time(), failed=not self.responded)

    def abandon(self) -> None:
        """A queued or refused exchange that will never run."""
        if not self.ended:
            self.client_lost()

    def expire(self, now: float) -> None:
        if self.ended:
            return
        deadline = self.response_deadline
        if deadline and now >= deadline and not self.responded:
            self.timed_out()
            return
        deadline = self.request_deadline
        if deadline and now >= deadline:
            if self.responded:
                self.client_lost()
                self.client.close()
            else:
                self.timed_out()

    def timed_out(self) -> None:
        task = self.connect_task
        if task is not None:
            task.cancel()
            self.connect_task = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.close()
        self.finish_call(error=True)
        self.respond(504, b"upstream timed out\n")


def _reason(status: int) -> bytes:
    return _REASONS.get(status) or _COMMON.get(status, b"Status")


_COMMON = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    401: b"Unauthorized",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    409: b"Conflict",
    500: b"Internal Server Error",
}


_NO_HEAD = Head()
