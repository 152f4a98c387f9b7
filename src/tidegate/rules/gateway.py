"""`GatewayRoute` documents -> the typed routes `tidegate gateway` compiles into its matcher.

One document is one route: which requests it takes (host, path, method,
headers), the service they go to, how the path is rewritten, its timeouts
and retries, its own canary, and which clients may set their own lane.

```yaml
apiVersion: traffic.opensergo.io/v1alpha1
kind: GatewayRoute
metadata: {name: shop-api}
spec:
  hosts: [shop.example.com]     # optional: Host header values (port ignored); default any host
  match:
    path: {prefix: /api/}       # exactly one of exact, prefix, regex (whole path, linear time); default prefix /
    methods: [GET, POST]        # optional; default every method
    headers:                    # optional; every one must hold (as TrafficLane's: exact/prefix/regex/present)
      x-env: {exact: gray}
  service: orders               # the service name requests go to (instances from the registry)
  stripPrefix: /api             # optional: removed from the path's start before it is sent
  rewritePrefix: /v1/           # optional: then the matched prefix (after strip) replaced by this
  priority: 0                   # optional: lower first; ties: exact before prefix (longest first) before regex, then name
  timeouts:                     # optional; each a duration, 0 = none
    connect: 1s                 # a connect slower than this: the next instance, else 504
    response: 30s               # request sent, no response head after this: 504
    request: 60s                # the whole exchange: 504
  retries: {attempts: 2}        # optional: idempotent requests without a body sent again on another
                                # instance after an upstream error before any response byte (total attempts)
  canary:                       # optional: a share of this route's traffic to instances tagged `tag`
    tag: v2                     # precedence as ingress-nginx/Higress: header > cookie > weight
    header: {name: x-canary, value: always}   # value "always" joins, "never" stays out; other values fall through
    cookie: {name: canary}      # cookie value "always" / "never", as ingress-nginx's canary-by-cookie
    weight: 10                  # percent of the rest
  trustLane:                    # optional: clients presenting this header with this value keep their lane
    header: x-tidegate-tester
    token: a-long-shared-secret # >= 16 characters
```

Without `trustLane` the gateway drops the lane member of a client's `baggage`
(the edge is a trust boundary). Every refusal names the document and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.core.baggage import is_valid_lane
from tidegate.core.coloring import Condition, MatchKind, Source, StringMatch
from tidegate.errors import RuleError
from tidegate.rules.document import check_api_version, register_kind
from tidegate.rules.lanes import _Spec
from tidegate.rules.quantities import SpecFields

KIND = "GatewayRoute"
API_VERSION = "traffic.opensergo.io/v1alpha1"
#: Most hosts, methods or header matches one route may list.
MAX_LIST = 64
#: Most attempts a route may ask for.
MAX_ATTEMPTS = 5
#: Shortest token that lets a client set its own lane.
MIN_TRUST_TOKEN = 16

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


@dataclass(frozen=True, slots=True)
class RouteCanary:
    """The route's own canary: header > cookie > weight."""

    tag: str
    header: str = ""
    header_value: str = "always"
    cookie: str = ""
    weight: float = 0.0


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    """One route, typed. `path` is a StringMatch of kind exact, prefix or regex."""

    name: str
    namespace: str
    service: str
    path: StringMatch
    hosts: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    headers: tuple[Condition, ...] = ()
    strip_prefix: str = ""
    rewrite_prefix: str | None = None
    priority: int = 0
    connect_timeout_s: float = 0.0
    response_timeout_s: float = 0.0
    request_timeout_s: float = 0.0
    attempts: int = 1
    canary: RouteCanary | None = None
    trust_header: str = ""
    trust_token: str = ""


_SPEC = ("hosts", "match", "service", "stripPrefix", "rewritePrefix", "priority", "timeouts", "retries", "canary", "trustLane")


def parse_gateway_route(document: Mapping[str, Any]) -> GatewayRoute:
    """Validate a `GatewayRoute` document into its typed form; RuleError names the field."""
    label = check_api_version(document, API_VERSION)
    metadata = document["metadata"]
    spec = SpecFields(label, document.get("spec"), "spec", _SPEC)
    lanes = _Spec(document, KIND)
    service = spec.required("service")
    if not isinstance(service, str) or not service.strip():
        raise spec.error("service", "must be a service name")
    hosts = _strings(spec, "hosts")
    hosts = tuple(host.lower().rsplit(":", 1)[0] if not host.startswith("[") else host.lower() for host in hosts)
    path = StringMatch(MatchKind.PREFIX, "/")
    methods: frozenset[str] = frozenset()
    headers: tuple[Condition, ...] = ()
    if spec.has("match"):
        match = SpecFields(label, spec.spec["match"], "spec.match", ("path", "methods", "headers"))
        if match.has("path"):
            path = lanes.string_match(match.spec["path"], "spec.match.path")
            if path.kind is MatchKind.PRESENT:
                raise match.error("path", "must be one of exact, prefix, regex")
            if path.kind is not MatchKind.REGEX and not path.value.startswith("/"):
                raise match.error("path", "must start with /")
        if match.has("methods"):
            listed = _strings(match, "methods")
            unknown = [m for m in listed if m.upper() not in _METHODS]
            if unknown:
                raise match.error("methods", f"unknown method {unknown[0]!r} (known: {', '.join(sorted(_METHODS))})")
            methods = frozenset(m.upper() for m in listed)
        if match.has("headers"):
            headers = tuple(lanes.named_matches(match.spec["headers"], "spec.match.headers", Source.HEADER))
            if len(headers) > MAX_LIST:
                raise match.error("headers", f"at most {MAX_LIST} matches")
    strip = spec.text("stripPrefix")
    if strip and (not strip.startswith("/") or strip.endswith("/") and strip != "/"):
        raise spec.error("stripPrefix", "must start with / and not end with / (e.g. /api)")
    rewrite = spec.text("rewritePrefix") if spec.has("rewritePrefix") else None
    if rewrite is not None and not rewrite.startswith("/"):
        raise spec.error("rewritePrefix", "must start with /")
    if rewrite is not None and path.kind is not MatchKind.PREFIX:
        raise spec.error("rewritePrefix", "needs a prefix path match (spec.match.path.prefix)")
    priority = spec.spec.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1_000_000:
        raise spec.error("priority", "must be an integer from -1000000 to 1000000")
    connect = response = request = 0.0
    if spec.has("timeouts"):
        timeouts = SpecFields(label, spec.spec["timeouts"], "spec.timeouts", ("connect", "response", "request"))
        connect = timeouts.seconds("connect", 0.0)
        response = timeouts.seconds("response", 0.0)
        request = timeouts.seconds("request", 0.0)
    attempts = 1
    if spec.has("retries"):
        retries = SpecFields(label, spec.spec["retries"], "spec.retries", ("attempts",))
        attempts = retries.whole("attempts", 1, minimum=1, maximum=MAX_ATTEMPTS)
    canary = _canary(label, spec) if spec.has("canary") else None
    trust_header = trust_token = ""
    if spec.has("trustLane"):
        trust = SpecFields(label, spec.spec["trustLane"], "spec.trustLane", ("header", "token"))
        trust_header = str(trust.required("header")).strip().lower()
        trust_token = str(trust.required("token"))
        if not trust_header:
            raise trust.error("header", "must be a header name")
        if len(trust_token) < MIN_TRUST_TOKEN or not trust_token.strip():
            raise trust.error("token", f"must be at least {MIN_TRUST_TOKEN} characters (not whitespace)")
    return GatewayRoute(
        name=str(metadata["name"]),
        namespace=str(metadata.get("namespace") or "default"),
        service=service.strip(),
        path=path,
        hosts=hosts,
        methods=methods,
        headers=headers,
        strip_prefix=strip,
        rewrite_prefix=rewrite,
        priority=priority,
        connect_timeout_s=connect,
        response_timeout_s=response,
        request_timeout_s=request,
        attempts=attempts,
        canary=canary,
        trust_header=trust_header,
        trust_token=trust_token,
    )


def _strings(spec: SpecFields, key: str) -> tuple[str, ...]:
    value = spec.spec.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise spec.error(key, "must be a list of non-empty strings")
    if len(value) > MAX_LIST:
        raise spec.error(key, f"at most {MAX_LIST} entries")
    return tuple(item.strip() for item in value)


def _canary(label: str, spec: SpecFields) -> RouteCanary:
    canary = SpecFields(label, spec.spec["canary"], "spec.canary", ("tag", "header", "cookie", "weight"))
    tag = canary.required("tag")
    if not isinstance(tag, str) or not is_valid_lane(tag):
        raise canary.error("tag", "must be an instance tag: 1-63 of A-Z a-z 0-9 . _ -")
    header = header_value = cookie = ""
    if canary.has("header"):
        by_header = SpecFields(label, canary.spec["header"], "spec.canary.header", ("name", "value"))
        header = str(by_header.required("name")).strip().lower()
        header_value = by_header.text("value", "always") or "always"
        if not header:
            raise by_header.error("name", "must be a header name")
    if canary.has("cookie"):
        by_cookie = SpecFields(label, canary.spec["cookie"], "spec.canary.cookie", ("name",))
        cookie = str(by_cookie.required("name")).strip()
        if not cookie:
            raise by_cookie.error("name", "must be a cookie name")
    weight = canary.number("weight", 0.0, minimum=0.0, maximum=100.0)
    return RouteCanary(tag, header, header_value, cookie, weight)


__all__ = ["KIND", "GatewayRoute", "RouteCanary", "RuleError", "parse_gateway_route"]

register_kind(KIND, parse_gateway_route)
