"""Coloring: which lane an inbound request joins when it arrives without one.

Edges (the gateway, the agent's inbound adapters) build a `RequestView`; a
`Coloring` walks its rules in order and the first that matches names the lane.
A request that already carries a lane keeps it. Matching never raises: a
malformed cookie or query string simply does not match. Regex matches run on
the linear-time engine of `tidegate.core.regex` (a value longer than its
input bound does not match).

Percentages are sticky: the same key value (a user id in a header or cookie)
always lands in the same bucket, by a stable CRC-32 of the key (never Python's
per-process randomised `hash`), so a user stays in or out of a lane on every
request, every process and every platform. Only a request without the key
falls back to the injected random draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

from tidegate.core.regex import Regex
from tidegate.core.regex import compile as compile_regex

#: Percentages resolve to 1/100 of a percent.
BUCKETS = 10_000

Draw = Callable[[], float]  # a uniform draw in [0, 1), e.g. random.Random(...).random


def parse_cookies(header: str) -> dict[str, str]:
    """Cookies from a `Cookie` header; the first of a repeated name wins; never raises."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not name or name in cookies:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


def parse_query(query_string: str) -> dict[str, str]:
    """Query parameters (percent-decoded); the first of a repeated name wins; never raises."""
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, errors="replace")
    except ValueError:
        return params
    for name, value in pairs:
        params.setdefault(name, value)
    return params


class RequestView:
    """The parts of a request coloring looks at, built by the edge.

    `headers` has lower-cased names (repeated headers joined with ", ").
    Cookies and query parameters are parsed on first use only."""

    __slots__ = ("method", "path", "headers", "query_string", "_cookies", "_query")

    def __init__(self, method: str, path: str, headers: Mapping[str, str], query_string: str = "") -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.query_string = query_string
        self._cookies: dict[str, str] | None = None
        self._query: dict[str, str] | None = None

    @property
    def cookies(self) -> Mapping[str, str]:
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get("cookie", ""))
        return self._cookies

    @property
    def query(self) -> Mapping[str, str]:
        if self._query is None:
            self._query = parse_query(self.query_string)
        return self._query


class Source(StrEnum):
    """Where a condition or a sticky key reads its value."""

    HEADER = "header"
    COOKIE = "cookie"
    QUERY = "query"
    PATH = "path"
    METHOD = "method"


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A named value of a request: header `x-user-id`, cookie `uid`, query `user`."""

    source: Source
    name: str = ""

    def read(self, view: RequestView) -> str | None:
        """The value, or None when the request lacks it."""
        if self.source is Source.HEADER:
            return view.headers.get(self.name)
        if self.source is Source.COOKIE:
            return view.cookies.get(self.name)
        if self.source is Source.QUERY:
            return view.query.get(self.name)
        if self.source is Source.PATH:
            return view.path
        return view.method


class MatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"  # the whole value must match, as in Istio/OpenSergo
    PRESENT = "present"


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: MatchKind
    value: str = ""
    pattern: Regex | None = None

    @classmethod
    def regex(cls, expression: str) -> StringMatch:
        """A whole-value match by the linear-time engine (`tidegate.core.regex`).

        Raises RegexError for a bad or refused expression (rule parsing turns it into a RuleError)."""
        return cls(MatchKind.REGEX, expression, compile_regex(expression))

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.kind is MatchKind.EXACT:
            return value == self.value
        if self.kind is MatchKind.PREFIX:
            return value.startswith(self.value)
        if self.kind is MatchKind.REGEX:
            return self.pattern is not None and self.pattern.fullmatch(value)
        return True


@dataclass(frozen=True, slots=True)
class Condition:
    key: RequestKey
    match: StringMatch

    def holds(self, view: RequestView) -> bool:
        return self.match.matches(self.key.read(view))


def sticky_bucket(key: str, salt: str = "") -> int:
    """A stable bucket in [0, BUCKETS) for `key`: same key, same bucket, everywhere."""
    return zlib.crc32(f"{salt}\x00{key}".encode("utf-8", "surrogatepass")) % BUCKETS


def percent_buckets(percent: float) -> int:
    """How many of the BUCKETS a percentage covers."""
    return round(min(max(percent, 0.0), 100.0) * (BUCKETS // 100))


@dataclass(frozen=True, slots=True)
class Percentage:
    """`percent` of requests, sticky by `sticky_key` when the request has it."""

    percent: float
    sticky_key: RequestKey | None = None
    salt: str = ""

    def admits(self, view: RequestView, draw: Draw) -> bool:
        value = self.sticky_key.read(view) if self.sticky_key is not None else None
        bucket = sticky_bucket(value, self.salt) if value is not None else int(draw() * BUCKETS)
        return bucket < percent_buckets(self.percent)


@dataclass(frozen=True, slots=True)
class ColoringRule:
    """Requests meeting every condition (and the percentage, if any) join `lane`.

    `services` limits where the rule applies (the entry services or gateway
    named by the document's selector); empty means every edge."""

    lane: str
    conditions: tuple[Condition, ...] = ()
    percentage: Percentage | None = None
    services: frozenset[str] = frozenset()

    def matches(self, view: RequestView, draw: Draw) -> bool:
        for condition in self.conditions:
            if not condition.holds(view):
                return False
        return self.percentage is None or self.percentage.admits(view, draw)


class Coloring:
    """Ordered coloring rules; the first match wins."""

    __slots__ = ("rules",)

    def __init__(self, rules: Iterable[ColoringRule] = ()) -> None:
        self.rules = tuple(rules)

    def lane_for(self, view: RequestView, draw: Draw, *, current_lane: str = "", service: str = "") -> str:
        """The lane of this request: `current_lane` if it has one, else the first
        matching rule's lane (rules scoped to other services skipped), else ""."""
        if current_lane:
            return current_lane
        for rule in self.rules:
            if rule.services and service not in rule.services:
                continue
            if rule.matches(view, draw):
                return rule.lane
        return ""
