"""Resource names rules target: Sentinel-style aliases, and the names that can never match.

tidegate governs (README, "Stability"): inbound HTTP routes `GET /orders/{id}`
(method and the framework's route template), gRPC methods `/pkg.Service/Method`,
outbound calls `http://<service>`, SQL templates `sql:<template>`, and any
name given to `tidegate.guard`.

- `resource_name(text)`: Sentinel's `GET:/foo` is read as `GET /foo`; a bare
  path `/foo` (Sentinel's name for every method of a route) is refused with a
  message saying what would match. Other names pass unchanged.
- `target_warnings(name)`: why a name that is valid can still never match
  anything tidegate governs (an outbound name with a path, a lower-case method,
  a query string in a route, a SQL statement that is not its template); empty
  when it may match.
"""

from __future__ import annotations

import re

from tidegate.core.sql import normalize

_SENTINEL_ROUTE = re.compile(r"^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|TRACE|CONNECT):(/|/[^/]\S*)$", re.IGNORECASE)
_ROUTE = re.compile(r"^([A-Za-z]+) (/\S*)$")
_GRPC = re.compile(r"^/[^/\s]+/[^/\s]+$")
_OUTBOUND = re.compile(r"^(https?)://([^/?#\s]*)(.*)$")


class ResourceNameError(ValueError):
    """A resource name tidegate cannot read; the message says what would match."""


def resource_name(text: str) -> str:
    """The resource `text` names: Sentinel's `METHOD:/path` becomes `METHOD /path`; a bare path that is
    no gRPC method is refused (ResourceNameError) with the names that would match."""
    sentinel = _SENTINEL_ROUTE.match(text)
    if sentinel:
        return f"{sentinel.group(1).upper()} {sentinel.group(2)}"
    if text.startswith("/") and not _is_grpc(text):
        raise ResourceNameError(
            f"{text!r} is a bare path (Sentinel's name for every method of a route); tidegate names an inbound route "
            f"by method and route template: use {f'GET {text}'!r}, {f'POST {text}'!r}, ... (one target each), "
            "or '/package.Service/Method' for a gRPC method"
        )
    return text


def _is_grpc(text: str) -> bool:
    if not _GRPC.match(text):
        return False
    service = text.split("/")[1]
    return "." in service or service[:1].isupper()


def target_warnings(name: str) -> list[str]:
    """Why `name` can never match what tidegate governs (empty: it may match)."""
    outbound = _OUTBOUND.match(name)
    if outbound:
        scheme, host, rest = outbound.groups()
        service = host.partition(":")[0] or "<service>"
        if scheme != "http" or ":" in host or rest:
            return [
                f"outbound calls are governed as 'http://{service}' (the service name only: no https, port or path); {name!r} never matches"
            ]
        return []
    if name.startswith("sql:"):
        statement = name[4:]
        try:
            template = normalize(statement)
        except Exception:  # a statement the normalizer cannot read: nothing to suggest
            return []
        if template != statement:
            return [f"SQL is governed by template: {name!r} never matches; did you mean 'sql:{template}'?"]
        return []
    route = _ROUTE.match(name)
    if route:
        method, path = route.groups()
        problems = []
        if method != method.upper():
            problems.append(f"methods are upper-case: {name!r} never matches; did you mean '{method.upper()} {path}'?")
        if "?" in path or "#" in path:
            problems.append(f"a route template has no query string or fragment: {name!r} never matches")
        return problems
    return []
