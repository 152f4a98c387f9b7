"""Serve the control plane with uvicorn (over TLS when given a certificate), announce where,
and end watch streams on shutdown."""

from __future__ import annotations

import asyncio
import gc
import socket

import uvicorn

from tidegate.control.app import create_app
from tidegate.control.limits import DEFAULT_LIMITS, Limits
from tidegate.control.plane import ControlPlane
from tidegate.control.storage import Storage
from tidegate.control.tokens import RoleTokens
from tidegate.core.hosts import WILDCARDS, HostCheck


class _Server(uvicorn.Server):
    """uvicorn, plus: print the bound address once listening, and close open
    watch streams when asked to exit (otherwise shutdown waits on them)."""

    def __init__(self, config: uvicorn.Config, plane: ControlPlane, host: str) -> None:
        super().__init__(config)
        self._plane = plane
        self._host = host
        self._scheme = "https" if config.ssl_certfile else "http"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Everything loaded so far lives as long as the process: keep it out
            # of the collector's full passes, which otherwise stall every push
            # to a thousand watchers for tens of milliseconds.
            gc.freeze()
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"tidegate control listening on {self._scheme}://{self._host}:{port}", flush=True)

    def handle_exit(self, sig: int, frame: object) -> None:
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        try:
            asyncio.get_running_loop().call_soon(self._plane.fanout.close_all)
        except RuntimeError:  # no loop running: nothing to close
            pass


def serve(
    storage: Storage,
    tokens: RoleTokens,
    host: str,
    port: int,
    open_reads: bool,
    instance_ttl: float,
    limits: Limits = DEFAULT_LIMITS,
    allowed_hosts: tuple[str, ...] = (),
    cert: str | None = None,
    key: str | None = None,
) -> None:
    """Serve until told to stop; with `cert` and `key` (PEM files), over TLS."""
    plane = ControlPlane(storage, instance_ttl=instance_ttl, limits=limits)
    app = create_app(plane, tokens, open_reads=open_reads, hosts=host_check(host, allowed_hosts))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    try:
        _Server(config, plane, host).run()
    finally:
        storage.close()


def host_check(host: str, allowed: tuple[str, ...]) -> HostCheck:
    """The Host headers a plane bound to `host` answers: its addresses, the names given,
    and, bound to every interface, this machine's own name."""
    names = list(allowed)
    if host in WILDCARDS:
        names.append(socket.gethostname())
    return HostCheck(host, names)
