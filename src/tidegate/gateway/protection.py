"""Protection at the edge: the stability rules in force, through the core Governor the agents use.

The same rule documents as the agents (`FaultToleranceRule` with its
strategies, `HotspotRule`, compiled by `tidegate.rules.stability` for the
gateway's service name, each document on its own so a bad one keeps its last
valid version): a rule whose target is `route/<name>` limits that route (QPS,
concurrency, throttling), its `origin` a lane (`origin: gray` limits the gray
lane's share of the route), a hot-spot rule on the route reads the parameter
`ip` (the client's address), `header:<name>` or `query:<name>`; a breaker on
`http://<service>` guards the upstream service, admitted by the outbound
pipeline. A refused request gets 429 (limits) or 503 (breakers) with
`Retry-After`. A route no rule names skips the governor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tidegate.core.governor import Entry, Governor
from tidegate.core.rulebook import RuleBook
from tidegate.errors import BlockedError
from tidegate.gateway.edge import RequestHeaders
from tidegate.gateway.routes import Route
from tidegate.rules.stability import KINDS, IsolatingCompiler

log = logging.getLogger("tidegate.gateway")


class Admission:
    """The gateway's Governor and the resources its rules name; the outbound pipeline's admission too."""

    def __init__(self, rulebook: RuleBook, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.governor = Governor()
        self.clock = clock
        self.rulebook = rulebook
        self._compiler = IsolatingCompiler(service)
        self._lock = threading.Lock()
        self.named: frozenset[str] = frozenset()
        self.hotspot_params: dict[str, tuple[str, ...]] = {}
        self.fallbacks: Mapping[str, Callable[[BlockedError], Any]] = {}
        #: Refusals since start, by status (the metrics read them).
        self.blocked = 0
        rulebook.add_listener(self._changed)
        self.reload()

    def _changed(self, kind: str) -> None:
        if kind in KINDS:
            self.reload()

    def reload(self) -> None:
        with self._lock:
            documents = [rule.document for rule in self.rulebook.all() if rule.kind in KINDS]
            rules, problems = self._compiler.compile(documents)
            for key, error in problems:
                log.error("tidegate gateway: stability rule %s refused; its last valid version (if any) stays: %s", "/".join(key), error)
            try:
                self.governor.load(rules)
            except Exception:
                log.exception("tidegate gateway: stability rules could not be loaded; the previous ones stay in force")
                return
            named = {flow.resource for flow in rules.flow} | {flow.ref_resource for flow in rules.flow if flow.ref_resource}
            named |= {breaker.resource for breaker in rules.breakers} | {hot.resource for hot in rules.hotspot}
            params: dict[str, set[str]] = {}
            for hot in rules.hotspot:
                params.setdefault(hot.resource, set()).add(hot.param)
            self.hotspot_params = {resource: tuple(sorted(keys)) for resource, keys in params.items()}
            self.named = frozenset(named)

    # -- routes (the proxy) ------------------------------------------------------------------

    def enter_route(self, route: Route, lane: str, request: RequestHeaders, peer: str) -> tuple[Entry, str] | None:
        """Admit a request to `route` (None: no rule names it), or raise the refusal."""
        resource = route.resource
        if resource not in self.named:
            return None
        args = None
        params = self.hotspot_params.get(resource)
        if params:
            args = {}
            for param in params:
                if param == "ip":
                    args[param] = peer
                elif param.startswith("header:"):
                    value = request.header_map().get(param[7:].lower())
                    if value is not None:
                        args[param] = value
                elif param.startswith("query:"):
                    value = request.request_view().query.get(param[6:])
                    if value is not None:
                        args[param] = value
        try:
            return self.governor.entry(resource, self.clock(), origin=lane or "base", args=args, inbound=True), resource
        except BlockedError:
            self.blocked += 1
            raise

    def leave_route(self, admitted: tuple[Entry, str], error: bool) -> None:
        admitted[0].exit(self.clock(), error)

    # -- upstream services (the outbound pipeline's Admission protocol) -----------------------

    def governs(self, resource: str) -> bool:
        return resource in self.named

    def enter(self, resource: str) -> Entry:
        try:
            return self.governor.entry(resource, self.clock())
        except BlockedError:
            self.blocked += 1
            raise

    def leave(self, entry: Entry, resource: str, error: bool) -> None:
        entry.exit(self.clock(), error)
