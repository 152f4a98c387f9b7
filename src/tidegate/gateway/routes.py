"""GatewayRoute documents compiled into the matcher every request asks once: host, path, method, headers.

`RouteTable.match(host, method, path, headers)` walks the routes of the
request's host (then those for any host) in their order: priority, then exact
paths before prefixes (longest first) before regexes, then name. An exact path
is one dict lookup; with a single route and no header match a request costs a
few comparisons. A compiled `Route` carries what the proxy needs precomputed:
the stability resource (`route/<name>`), the path rewrite, timeouts, retries,
the canary and the lane trust.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from tidegate.core.coloring import MatchKind
from tidegate.rules.gateway import GatewayRoute, RouteCanary

#: Idempotent methods (RFC 9110 §9.2.2): only these are sent again on another instance.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

_KIND_ORDER = {MatchKind.EXACT: 0, MatchKind.PREFIX: 1, MatchKind.REGEX: 2}


class Route:
    """One compiled route; `rule` is the typed document it came from."""

    __slots__ = (
        "rule",
        "name",
        "service",
        "resource",
        "methods",
        "headers",
        "kind",
        "value",
        "pattern",
        "strip",
        "rewrite",
        "connect_timeout_s",
        "response_timeout_s",
        "request_timeout_s",
        "attempts",
        "canary",
        "trust_header",
        "trust_token",
        "needs_view",
    )

    def __init__(self, rule: GatewayRoute) -> None:
        self.rule = rule
        self.name = rule.name
        self.service = rule.service
        #: The resource stability rules name to limit this route (`route/<name>`).
        self.resource = "route/" + rule.name
        self.methods = frozenset(m.encode() for m in rule.methods)
        self.headers = rule.headers
        self.kind = rule.path.kind
        self.value = rule.path.value
        self.pattern = rule.path.pattern
        self.strip = rule.strip_prefix
        self.rewrite = rule.rewrite_prefix
        self.connect_timeout_s = rule.connect_timeout_s
        self.response_timeout_s = rule.response_timeout_s
        self.request_timeout_s = rule.request_timeout_s
        self.attempts = rule.attempts
        self.canary: RouteCanary | None = rule.canary
        self.trust_header = rule.trust_header
        self.trust_token = rule.trust_token
        #: Whether matching or the canary reads headers beyond the path (a header view is built).
        self.needs_view = bool(rule.headers) or rule.canary is not None or bool(rule.trust_header)

    def path_matches(self, path: str) -> bool:
        kind = self.kind
        if kind is MatchKind.PREFIX:
            return path.startswith(self.value)
        if kind is MatchKind.EXACT:
            return path == self.value
        return self.pattern is not None and self.pattern.fullmatch(path)

    def upstream_path(self, path: str) -> str:
        """The path sent upstream: the strip prefix removed, then the matched prefix rewritten."""
        strip = self.strip
        if strip and path.startswith(strip):
            path = path[len(strip) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
        rewrite = self.rewrite
        if rewrite is not None:
            prefix = self.value
            if strip and prefix.startswith(strip):
                prefix = prefix[len(strip) :] or "/"
            if path.startswith(prefix):
                path = rewrite + path[len(prefix) :]
        return path

    def __repr__(self) -> str:
        return f"Route({self.name!r} {self.kind}:{self.value!r} -> {self.service})"


HeaderLookup = Callable[[], Mapping[str, str]]


class RouteTable:
    """The routes in force, by host; built whole and swapped in one assignment."""

    __slots__ = ("_by_host", "_any", "routes")

    def __init__(self, rules: Iterable[GatewayRoute] = ()) -> None:
        ordered = sorted(rules, key=_order)
        self.routes = tuple(Route(rule) for rule in ordered)
        by_host: dict[str, list[Route]] = {}
        any_host: list[Route] = []
        for route in self.routes:
            if route.rule.hosts:
                for host in route.rule.hosts:
                    by_host.setdefault(host, []).append(route)
            else:
                any_host.append(route)
        # A host's own routes first, then the routes for any host (each list keeps the order).
        self._by_host = {host: tuple(routes) + tuple(any_host) for host, routes in by_host.items()}
        self._any = tuple(any_host)

    def match(self, host: str, method: bytes, path: str, headers: HeaderLookup) -> Route | None:
        """The first route taking this request, or None. `host` is lower-case without its port;
        `headers()` gives the lower-cased header view (only asked when a route matches on headers)."""
        candidates = self._by_host.get(host, self._any) if self._by_host else self._any
        for route in candidates:
            if route.methods and method not in route.methods:
                continue
            if not route.path_matches(path):
                continue
            if route.headers:
                view = headers()
                if not all(condition.match.matches(view.get(condition.key.name)) for condition in route.headers):
                    continue
            return route
        return None

    def __len__(self) -> int:
        return len(self.routes)


def _order(rule: GatewayRoute) -> tuple[int, int, int, str, str]:
    return (rule.priority, _KIND_ORDER.get(rule.path.kind, 3), -len(rule.path.value), rule.namespace, rule.name)
