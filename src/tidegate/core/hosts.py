"""Which `Host` header values a server answers: the defence against DNS rebinding.

A page in a browser can make a name it controls (`evil.example`) resolve to
127.0.0.1, or to a pod's address, and then read whatever answers there, since
to the browser it is the page's own origin. The request still carries the
page's name in `Host`; refusing every Host that is neither an address the
server serves nor a name it was told to answer keeps such pages from reading
it. One check, `HostCheck`, for the control plane (`tidegate.control.app`) and
every agent's admin endpoint (`tidegate.agent.lifecycle.admin`); both answer a
refused Host with `MISDIRECTED` (421) and `HostCheck.refusal`'s message. Pure:
the caller passes the bound address and the names, this module looks nothing up.

The rule, for a server bound to `bound`:
- an IP literal is answered when it is the bound address, or one given among
  the names; any loopback address when bound to loopback; any address when
  bound to a wildcard (`0.0.0.0`, `::`): a rebinding page cannot make a browser
  send an IP literal (a browser that sends one is at that very origin);
- `localhost`, `localhost.localdomain` and `*.localhost` when bound to loopback
  or a wildcard (browsers resolve them to loopback themselves, RFC 6761);
- the bound name itself when bound by name, and every configured name
  (`orders.internal`, `*.example.com` for any name under it, `*` for any Host);
- a request without a Host header (HTTP/1.0; browsers always send one).
A Host that is malformed or empty names nothing served and is refused. The
port is not compared: a proxy or a port forward may change it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: The status a refused `Host` is answered with (RFC 9110: the request was sent to a
#: server that is not able to produce a response for that authority).
MISDIRECTED = 421
#: Bind addresses that mean every interface.
WILDCARDS = ("", "0.0.0.0", "::")
#: Names that resolve to loopback on every machine (and never to an attacker's address).
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostCheck:
    """`allows(host_header)` for a server bound to `bound`, also answering `names`
    (host names, `*.` patterns, `*`; IP literals among them are addresses it serves)."""

    def __init__(self, bound: str, names: Iterable[str] = ()) -> None:
        self.bound = bound
        cleaned = [host for host in (hostname(name) for name in names if name and name.strip()) if host]
        #: Addresses given among the names (kept apart: they are compared as addresses).
        self.addresses = tuple(dict.fromkeys(ip for ip in map(_ip, cleaned) if ip is not None))
        #: The configured names, normalized (lower case, no port, no final dot); no IP literal.
        self.names = tuple(dict.fromkeys(host for host in cleaned if _ip(host) is None))
        self._wildcard = bound in WILDCARDS
        self._bound_ip = _ip(bound)
        self._bound_name = bound.strip().lower().rstrip(".")
        self._loopback = self._wildcard or (self._bound_ip.is_loopback if self._bound_ip is not None else self._bound_name in LOCAL_NAMES)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this `Host` header (None: it sent none) may be answered."""
        if header is None:
            return True
        host = hostname(header)
        if host is None:
            return False
        ip = _ip(host)
        if ip is not None:
            if self._wildcard or ip == self._bound_ip or ip in self.addresses:
                return True
            return self._loopback and ip.is_loopback
        if self._loopback and (host in LOCAL_NAMES or host.endswith(".localhost")):
            return True
        if self._bound_ip is None and host == self._bound_name:
            return True
        return any(_matches(host, name) for name in self.names)

    def served(self) -> str:
        """What this server answers, for a refusal's message."""
        parts = ["any IP address" if self._wildcard else self.bound]
        if self._loopback:
            parts.append("localhost")
        parts.extend(str(address) for address in self.addresses if address != self._bound_ip)
        parts.extend(self.names)
        return ", ".join(parts)

    def refusal(self, header: str | None, server: str = "this server", remedy: str = "call it by one of those") -> str:
        """The message that goes with a refused `header`: what `server` serves, and `remedy`."""
        return f"Host {header!r} is not an address {server} serves ({self.served()}; a DNS-rebinding guard): {remedy}"


def hostname(header: str) -> str | None:
    """The host part of a Host header (no port, no brackets, no final dot, lower case),
    or None when malformed or empty."""
    text = header.strip().lower()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not _is_port(text[end + 1 :])):
            return None
        return text[1:end] or None
    if text.count(":") > 1:  # an IPv6 literal without brackets (no port can follow one), or nothing valid
        return text if _ip(text) is not None else None
    name, colon, port = text.partition(":")
    if colon:
        if not _is_port(colon + port):
            return None
        text = name
    text = text.rstrip(".")
    return text or None


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdigit() and len(text) <= 6


def _ip(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped if mapped is not None else address


def _matches(host: str, name: str) -> bool:
    if name == "*":
        return True
    if name.startswith("*."):
        return host.endswith(name[1:])
    return host == name
