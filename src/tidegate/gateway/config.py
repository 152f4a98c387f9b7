"""What `tidegate gateway` was asked for: `Config` (command.py builds it) and `Limits`, every bound of the data plane."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound the data plane holds, in one place (the README lists them; flags set them)."""

    #: The request line and headers must arrive within this (408 after: slowloris).
    header_timeout_s: float = 10.0
    #: A keep-alive connection idle this long is closed.
    idle_timeout_s: float = 60.0
    #: Default connect timeout to an instance (a route's own wins).
    connect_timeout_s: float = 3.0
    #: Default wait for a response head once the request is sent (504 after; a route's own wins).
    response_timeout_s: float = 60.0
    #: Default bound on a whole exchange (0 = none; a route's own wins).
    request_timeout_s: float = 0.0
    #: Longest request target (414 beyond).
    max_url_bytes: int = 8192
    #: Most bytes of header names and values (431 beyond).
    max_header_bytes: int = 32768
    #: Most header fields (431 beyond).
    max_headers: int = 100
    #: Largest request body (413 beyond).
    max_body_bytes: int = 100 * 1024 * 1024
    #: Most client connections one worker holds (more are closed at once).
    max_connections: int = 20000
    #: How long a draining gateway waits for in-flight requests.
    drain_timeout_s: float = 20.0
    #: How long a draining gateway leaves an idle keep-alive connection open for its client to send
    #: one more request (answered with `connection: close`) or to close it. Closing it first races a
    #: client that sends on it at that moment (its request is lost), so this is at least the usual
    #: client keep-alive expiry (httpx: 5 s); the drain timeout bounds it.
    drain_idle_s: float = 5.0


@dataclass
class Config:
    """What `tidegate gateway` was asked for (command.py builds it)."""

    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    workers: int = 1
    service: str = "gateway"
    control: str = ""
    token: str | None = None
    #: CA certificate(s) an https:// control plane is verified with (None: $TIDEGATE_CA, else the system's).
    ca: str | None = None
    routes_file: str = ""
    upstreams: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)
    snapshot: str = ""
    cert: str = ""
    key: str = ""
    access_log: str = ""
    advertise: str = ""
    limits: Limits = field(default_factory=Limits)
