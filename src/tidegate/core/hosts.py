"""The `Host` header check that keeps DNS rebinding off tidegate's HTTP endpoints.

A page in a browser can make a name it controls resolve to 127.0.0.1 (or to a
pod's address) and then read whatever answers there, since to the browser it
is the page's own origin. The request still carries the page's name in `Host`;
the control plane and every agent's admin endpoint answer only requests whose
`Host` is a name they were told they serve (`localhost` always) or an IP
literal (a browser that sends an IP literal is at that very origin, so no name
was rebound). The port is not compared: a proxy in front may change it.

Shared by the control plane (`tidegate.control`) and the agent's admin
endpoint (`tidegate.agent.lifecycle.admin`); pure, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: The status both endpoints answer a refused `Host` with (RFC 9110: the request was
#: sent to a server that is not able to produce a response for that authority).
MISDIRECTED = 421

#: Always served: a name that resolves to loopback on every machine, and no attacker's.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def host_name(header: str) -> str:
    """The host part of a `Host` header value, lower-case, without port, brackets or a final dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:  # name:port or v4:port (a bare v6 has several colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def served_names(names: Iterable[str]) -> frozenset[str]:
    """The names a server accepts in `Host`: `names` (bound or advertised hosts, configured
    names; IP literals among them are dropped, as every IP literal passes) plus `LOCAL_NAMES`."""
    cleaned = {host_name(name) for name in names if name and name.strip()}
    return frozenset(name for name in cleaned if name and not is_ip_literal(name)) | LOCAL_NAMES


def host_allowed(header: str | None, served: frozenset[str]) -> bool:
    """Whether a request with this `Host` header (None: it sent none) may be answered.

    No header passes (an HTTP/1.0 client, not a browser); an IP literal passes; a name
    passes when it is in `served` (from `served_names`)."""
    if header is None:
        return True
    name = host_name(header)
    if not name:
        return False
    return is_ip_literal(name) or name in served


def refusal(header: str | None) -> str:
    """The message that goes with a refused `Host`."""
    return (
        f"Host {header!r} is not a name this server serves (a DNS-rebinding guard): "
        "call it by its IP address or localhost, or add the name to its allowed hosts"
    )
