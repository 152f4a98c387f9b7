"""Which `Host` header values a server answers: the defence against DNS rebinding.

A web page on `evil.example` that rebinds its name to 127.0.0.1 makes the
browser send `Host: evil.example:7070` to a loopback server; refusing every
Host that is neither an address the server serves nor a name it was told to
answer keeps such pages from reading it. Shared by the control plane and the
agent's admin endpoint; pure (the caller passes the bound address and the
names, this module looks nothing up).

The rule, for a server bound to `bound`:
- an IP literal is answered when it is the bound address; any loopback
  address when bound to loopback; any address when bound to a wildcard
  (`0.0.0.0`, `::`): a rebinding page cannot make a browser send an IP literal;
- `localhost` and `*.localhost` when bound to loopback or a wildcard (browsers
  resolve them to loopback themselves, RFC 6761);
- the bound name itself when bound by name, and every configured name
  (`orders.internal`, `*.example.com` for any name under it, `*` for any Host);
- a request without a Host header (HTTP/1.0; browsers always send one).
The port is not compared: a proxy or a port forward may change it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

WILDCARDS = ("", "0.0.0.0", "::")


class HostCheck:
    """`allows(host_header)` for a server bound to `bound`, also answering `names`."""

    def __init__(self, bound: str, names: Iterable[str] = ()) -> None:
        self.bound = bound
        self.names = tuple(name.strip().lower().rstrip(".") for name in names if name.strip())
        self._wildcard = bound in WILDCARDS
        self._bound_ip = _ip(bound)
        self._loopback = self._wildcard or (self._bound_ip.is_loopback if self._bound_ip is not None else bound.lower() == "localhost")

    def allows(self, header: str | None) -> bool:
        if header is None or header == "":
            return True
        host = hostname(header)
        if host is None:
            return False
        ip = _ip(host)
        if ip is not None:
            if self._wildcard or ip == self._bound_ip:
                return True
            return self._loopback and ip.is_loopback
        if self._loopback and (host == "localhost" or host.endswith(".localhost")):
            return True
        if self._bound_ip is None and host == self.bound.lower().rstrip("."):
            return True
        return any(_matches(host, name) for name in self.names)

    def served(self) -> str:
        """What this server answers, for a refusal's message."""
        parts = ["any IP address" if self._wildcard else self.bound]
        if self._loopback:
            parts.append("localhost")
        parts.extend(self.names)
        return ", ".join(parts)


def hostname(header: str) -> str | None:
    """The host part of a Host header (no port, no brackets, lower case), or None when malformed."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not _is_port(text[end + 1 :])):
            return None
        return text[1:end] or None
    name, colon, port = text.rpartition(":")
    if colon and ":" not in name:
        if not _is_port(":" + port):
            return None
        text = name
    elif colon:  # several colons without brackets: not a valid Host
        return None
    text = text.rstrip(".")
    return text or None


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdigit() and len(text) <= 6


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _matches(host: str, name: str) -> bool:
    if name == "*":
        return True
    if name.startswith("*."):
        return host.endswith(name[1:])
    return host == name
