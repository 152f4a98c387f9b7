"""Drop idle keep-alive connections to draining addresses from httpx, requests and aiohttp pools.

Called from the patched send of each library, in the thread or event loop the
client is used from (the only place that is safe), with the addresses the
outbound pipeline says the client has not acted on yet (`stale_addresses`). Connections in use are left alone:
their response carries `Connection: close`. These reach into the libraries'
pools; any surprise there is logged at debug and the connection is left to
the server, which closes it when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger("tidegate")

_closing: set[asyncio.Task[None]] = set()  # held until done, so no task is collected mid-close

Address = tuple[str, int]
#: `drop(client, addresses)`: close the client's idle connections to `addresses`.
Drop = Callable[[Any, Sequence[Address]], None]


def _httpcore_idle(pool: Any, addresses: Iterable[Address]) -> list[Any]:
    wanted = {(host.encode(), port) for host, port in addresses}
    with pool._optional_thread_lock:
        idle = [
            c
            for c in pool._connections
            if c.is_idle() and (getattr(c, "_origin", None) is not None and (c._origin.host, c._origin.port) in wanted)
        ]
        for connection in idle:
            pool._connections.remove(connection)
    return idle


def _httpx_pools(client: Any) -> list[Any]:
    transports = [client._transport, *client._mounts.values()]
    return [t._pool for t in transports if t is not None and hasattr(t, "_pool")]


def drop_httpx(client: Any, addresses: Sequence[Address]) -> None:
    try:
        for pool in _httpx_pools(client):
            for connection in _httpcore_idle(pool, addresses):
                connection.close()
    except Exception:
        log.debug("tidegate: could not drop httpx connections to %s", addresses, exc_info=True)


def drop_httpx_async(client: Any, addresses: Sequence[Address]) -> None:
    """Called on the client's event loop: the connections leave the pool now and close in a task."""
    try:
        loop = asyncio.get_running_loop()
        for pool in _httpx_pools(client):
            for connection in _httpcore_idle(pool, addresses):
                task = loop.create_task(connection.aclose())
                _closing.add(task)
                task.add_done_callback(_closing.discard)
    except Exception:
        log.debug("tidegate: could not drop httpx connections to %s", addresses, exc_info=True)


def drop_requests(session: Any, addresses: Sequence[Address]) -> None:
    wanted = set(addresses)
    try:
        for adapter in session.adapters.values():
            pools = adapter.poolmanager.pools
            for key in [k for k in pools.keys() if (k.key_host, k.key_port) in wanted]:
                pools.pop(key, None)  # the container closes the pool: its idle connections close now
    except Exception:
        log.debug("tidegate: could not drop requests connections to %s", addresses, exc_info=True)


def drop_aiohttp(session: Any, addresses: Sequence[Address]) -> None:
    wanted = set(addresses)
    try:
        conns = session.connector._conns
        for key in [k for k in conns if (k.host, k.port) in wanted]:
            for protocol, _ in conns.pop(key, ()):
                protocol.close()
    except Exception:
        log.debug("tidegate: could not drop aiohttp connections to %s", addresses, exc_info=True)
