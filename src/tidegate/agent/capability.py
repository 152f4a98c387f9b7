"""How a capability of the agent plugs into the instance's lifecycle: one base class, its hooks' arguments.

A capability (lossless offline, lossless online, stability, lanes, metrics,
the outbound router) is a `Capability` registered on the runtime with
`runtime.add(...)`. The lifecycle and the bootstrap call each hook on every
registered capability, in registration order, through `Capabilities`; a
hook that raises is logged and the others still run. Every hook does nothing
here, so a capability overrides only those it needs:

- `after_fork_in_child()`: in a forked child (one at-fork handler, in `boot`);
- `on_listening(owner)`: this process owns the server's listening sockets;
- `on_serving(serving)`: this process serves requests (a worker or a single process);
- `may_register()`: the owner registers once every capability says yes;
- `state_on_register()`: the state an instance enters the registry in (first answer wins);
- `admin_routes()`: writes it adds to the admin endpoint;
- `asked(want)`: the control plane asks this instance to go offline or online (an admin's ask, heard over the watch);
- `on_stopping()`: the server shuts down (after deregistration).

This module imports only the runtime and `tidegate.core`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tidegate.agent.runtime import AgentRuntime
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.trust import is_loopback

log = logging.getLogger("tidegate")

T = TypeVar("T")

#: The directory a server's owner shares with its workers (metrics, drain board,
#: prewarm markers), exported before they start so forked and spawned ones inherit it.
SHARED_DIR_ENV = "TIDEGATE_METRICS_DIR"

#: An admin write: (JSON body, query parameters) -> (HTTP status, JSON answer); a `signed`
#: route's write gets a `SignedBody` instead of the parsed JSON.
AdminWrite = Callable[[Any, Mapping[str, list[str]]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SignedBody:
    """What a `signed` admin write gets: the exact body bytes and the signature header sent with them."""

    raw: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class AdminRoute:
    """A `POST` the admin endpoint answers (authenticated there, unless `signed`)."""

    write: AdminWrite
    #: False for writes that may take long (a drain): they take the fork gate only where they need it.
    gated: bool = True
    #: True for a write that authenticates its own requests (a drain notice, by its signature):
    #: the admin endpoint then asks no bearer token for it.
    signed: bool = False


@dataclass(frozen=True, slots=True)
class Listening:
    """`on_listening`: this process owns the listening sockets and publishes them as `instances`."""

    instances: tuple[Instance, ...]
    admin_port: int | None  # None: the admin endpoint did not start
    shared_dir: Path | None  # also in the environment as SHARED_DIR_ENV
    admin_host: str = "127.0.0.1"  # the address the admin endpoint bound (TIDEGATE_ADMIN_HOST)

    @property
    def advertised_host(self) -> str:
        """The host consumers are told to call."""
        return self.instances[0].host if self.instances else "127.0.0.1"

    @property
    def admin_address(self) -> str:
        """`host:port` where the instances' providers reach this admin endpoint, "" when they cannot:
        bound to loopback, only providers on this host (so only with a loopback advertised host);
        bound to an address, that address; bound to every interface, the advertised host."""
        if not self.admin_port:
            return ""
        if self.admin_host in ("0.0.0.0", "::", ""):
            host = self.advertised_host
        elif is_loopback(self.admin_host):
            if not is_loopback(self.advertised_host):
                return ""
            host = "127.0.0.1"
        else:
            host = self.admin_host
        return f"[{host}]:{self.admin_port}" if ":" in host else f"{host}:{self.admin_port}"


@dataclass(frozen=True, slots=True)
class Serving:
    """`on_serving`: this process serves requests."""

    shared_dir: Path | None  # the owner's shared directory, when this server has one
    owner: bool  # this process also owns the listening sockets (a single-process server)


class Capability:
    """A part of the agent with lifecycle hooks; every hook is a no-op until overridden."""

    def after_fork_in_child(self) -> None:
        """In a forked child: drop what belongs to the parent (threads, locks, ownership)."""

    def on_listening(self, owner: Listening) -> None:
        """This process owns the server's listening sockets."""

    def on_serving(self, serving: Serving) -> None:
        """This process serves requests."""

    def may_register(self) -> bool:
        """Whether the owner may register the instance yet."""
        return True

    def state_on_register(self) -> InstanceState | None:
        """The state the instance enters the registry in; None: no opinion."""
        return None

    def admin_routes(self) -> Mapping[str, AdminRoute]:
        """Writes this capability adds to the admin endpoint, by path."""
        return {}

    def asked(self, want: str) -> bool:
        """An admin asked, through the control plane, that this instance go `want` (ASK_OFFLINE,
        ASK_ONLINE); True when this capability took it on."""
        return False

    def on_stopping(self) -> None:
        """The server shuts down."""


class Capabilities:
    """Calls one hook on every capability registered on `runtime`, in registration order, guarded."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime

    def after_fork_in_child(self) -> None:
        for capability in self._each():
            _guarded(capability, "after_fork_in_child", capability.after_fork_in_child, None)

    def on_listening(self, owner: Listening) -> None:
        for capability in self._each():
            _guarded(capability, "on_listening", lambda: capability.on_listening(owner), None)

    def on_serving(self, serving: Serving) -> None:
        for capability in self._each():
            _guarded(capability, "on_serving", lambda: capability.on_serving(serving), None)

    def may_register(self) -> bool:
        """True when every capability says yes (one that fails to answer does not hold registration)."""
        return all([_guarded(capability, "may_register", capability.may_register, True) for capability in self._each()])

    def state_on_register(self) -> InstanceState | None:
        for capability in self._each():
            state = _guarded(capability, "state_on_register", capability.state_on_register, None)
            if state is not None:
                return state
        return None

    def admin_routes(self) -> dict[str, AdminRoute]:
        routes: dict[str, AdminRoute] = {}
        for capability in self._each():
            for path, route in _guarded(capability, "admin_routes", capability.admin_routes, _NO_ROUTES).items():
                if path in routes:
                    log.warning("tidegate: admin path %s is claimed twice; %s's is not served", path, type(capability).__name__)
                    continue
                routes[path] = route
        return routes

    def asked(self, want: str) -> bool:
        """True when a capability took the ask on (every one is told)."""
        return any([_guarded(capability, "asked", lambda: capability.asked(want), False) for capability in self._each()])

    def on_stopping(self) -> None:
        for capability in self._each():
            _guarded(capability, "on_stopping", capability.on_stopping, None)

    def _each(self) -> tuple[Capability, ...]:
        return self._runtime.capabilities(Capability)


_NO_ROUTES: Mapping[str, AdminRoute] = {}


def _guarded(capability: Capability, hook: str, call: Callable[[], T], failed: T) -> T:
    try:
        return call()
    except Exception:  # one capability's failure must not stop the others or the server
        log.exception("tidegate: %s.%s failed; the agent goes on without it", type(capability).__name__, hook)
        return failed
