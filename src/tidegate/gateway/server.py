"""The process model of `tidegate gateway`: workers sharing the port, signals, the drain.

`serve(config)` runs one worker (its engine: `engine.Gateway`): its listener
binds with SO_REUSEPORT, so N workers (`--workers N`, forked by `run` before
any thread starts) share the port and the kernel spreads connections evenly,
and a new gateway can bind while an old one drains. On SIGTERM (or SIGINT) a
worker drains: it stops accepting, tells the control plane, closes idle
keep-alive connections, answers what is in flight with `Connection: close`,
and exits when nothing is in flight or after `drain_timeout_s`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from tidegate.core.context import consumer_value
from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import InstanceState
from tidegate.core.rulebook import RuleBook
from tidegate.gateway.access_log import AccessLog
from tidegate.gateway.config import Config
from tidegate.gateway.engine import Gateway

log = logging.getLogger("tidegate.gateway")


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


#: Linux's switch that hands the connections still in a closed listener's accept queue to another
#: listener of its SO_REUSEPORT group (Linux >= 5.14); at 0 they are reset when a gateway drains.
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def note_accept_queue_migration(path: str = MIGRATE_REQ) -> bool:
    """Whether the kernel hands a draining listener's queued connections to the other replicas; logs
    once what to set when it does not (a restart of one of several gateways on a shared port resets
    the few connections that arrived just before its listener closed)."""
    try:
        with open(path) as handle:
            migrates = handle.read().strip() != "0"
    except OSError:
        return False  # not Linux, or a kernel without the switch: nothing to advise
    if not migrates:
        log.info(
            "tidegate gateway: %s is 0: connections queued at this listener when it closes in a drain are reset;"
            " 'sysctl -w net.ipv4.tcp_migrate_req=1' hands them to the other gateways on the port",
            path,
        )
    return migrates


#: Allocations between two collections of the young generation (the default, 700, costs a request a collection every few).
GC_THRESHOLD = 20_000


#: Set by a SIGTERM or SIGINT that arrives while a worker still starts (before its loop owns the signals).
_stop_requested = False


def _request_stop(signum: int, frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def serve(config: Config, worker: int = 0, ready: Callable[[int], None] | None = None) -> int:
    """Run one worker until it has drained; returns the exit status."""
    # A stop asked for during start-up is kept and honoured once serving (a drain of nothing),
    # rather than killing the half-started worker with the default action.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _request_stop)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(loop, config, worker, ready))
    finally:
        loop.close()


async def _serve(loop: asyncio.AbstractEventLoop, config: Config, worker: int, ready: Callable[[int], None] | None) -> int:
    from tidegate.gateway.admin import AdminProtocol
    from tidegate.gateway.proxy import ClientConnection
    from tidegate.gateway.sources import Sources

    directory = ServiceDirectory()
    rulebook = RuleBook()
    access = AccessLog.open(config.access_log, worker) if config.access_log else None
    gateway = Gateway(
        loop,
        directory,
        rulebook,
        service=config.service,
        limits=config.limits,
        scheme=b"https" if config.cert else b"http",
        access_log=access,
    )
    sources = Sources(config, directory, rulebook)
    sources.start()
    # What start-up built lives as long as the worker: out of the collector's sight, and the
    # young generation collected less often (the request path frees by reference count; few cycles).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    context = None
    if config.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.cert, config.key or None)
    sock = listen_socket(config.host, config.port)
    port = sock.getsockname()[1]
    limit = config.limits.max_connections

    def accept() -> ClientConnection:
        connection = ClientConnection(gateway)
        if len(gateway.connections) >= limit:
            loop.call_soon(connection.close)
        return connection

    server = await loop.create_server(accept, sock=sock, ssl=context, backlog=4096)
    admin = None
    if config.admin_port >= 0 and (config.admin_port or worker == 0):
        admin_port = config.admin_port + worker if config.admin_port else 0
        admin = await loop.create_server(lambda: AdminProtocol(gateway, sources), config.admin_host, admin_port, reuse_address=True)
        admin_host, admin_bound = admin.sockets[0].getsockname()[:2]
        sources.admin_address = f"{admin_host}:{admin_bound}"
    gateway.start_sweeping()
    if worker == 0:
        note_accept_queue_migration()
        sources.register(config.advertise or config.host, port)
        if sources.admin_address:
            gateway.consumer = consumer_value(config.service, sources.admin_address)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if _stop_requested:
        stop.set()
    log.info("tidegate gateway: worker %d listening on %s:%d (admin %s)", worker, config.host, port, sources.admin_address or "off")
    if ready is not None:
        ready(port)
    print(
        f"tidegate gateway: listening on {config.host}:{port}" + (f", admin {sources.admin_address}" if sources.admin_address else ""),
        flush=True,
    )
    await stop.wait()
    # The drain: stop accepting, tell the control plane, close idle connections, let in-flight ones finish.
    server.close()
    sources.announce(InstanceState.DRAINING)
    gateway.begin_drain()
    deadline = loop.time() + config.limits.drain_timeout_s
    while gateway.connections and loop.time() < deadline:  # busy ones end with their response, idle ones politely
        await asyncio.sleep(0.05)
    for connection in list(gateway.connections):
        connection.close()
    gateway.stop_sweeping()
    gateway.pool.close_all()
    if admin is not None:
        admin.close()
    sources.stop()
    if access is not None:
        access.close()
    return 0


def run(config: Config) -> int:
    """`tidegate gateway`: one worker in this process, or N forked workers sharing the port."""
    if config.workers <= 1:
        return serve(config)
    if config.port == 0:
        probe = listen_socket(config.host, 0)  # N workers must share one port: pick it now
        config.port = probe.getsockname()[1]
        probe.close()
    children: list[int] = []
    for worker in range(config.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            status = 1
            try:
                status = serve(config, worker)
            except BaseException:  # said before the child exits: os._exit would swallow the traceback
                log.exception("tidegate gateway: worker %d failed", worker)
            finally:
                os._exit(status)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        status = status or (os.waitstatus_to_exitcode(code) if code else 0)
    return status
