"""The trust boundary and gray at the edge: which lane a request joins, and where a route's canary sends it.

The gateway is the first governed hop, so what an outside client says about
lanes is not believed: the lane member of its `baggage` (`tidegate.lane`, or
`TIDEGATE_LANE_KEY`) is dropped, other members kept byte for byte, unless the
route's `trustLane` header carries the route's token (testers steering
themselves). Then the TrafficLane coloring rules in force (the agents' rules,
`tidegate.core.coloring`) color a request without a lane, and the lane is
written into `baggage` so every hop behind carries it.

A route's own canary picks the instances tagged `canary.tag` for a share of
the route's base traffic, with the precedence of ingress-nginx and Higress:
a header (value "always" in, "never" out, or the configured value in), then a
cookie ("always"/"never"), then the weight. It steers this hop only: the
canary is not a lane and is not written into `baggage`.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable, Iterator, Mapping

from tidegate.core.baggage import get_lane, with_lane
from tidegate.core.coloring import BUCKETS, RequestView, parse_cookies
from tidegate.core.context import lane_key
from tidegate.gateway.routes import Route

Draw = Callable[[], float]


class HeaderMap(Mapping[str, str]):
    """Header values by lower-case name (repeated ones joined by ", ") over the head as parsed.

    A rule reads one or two names per request: `get` and `in` scan the parsed
    pairs (a handful) instead of decoding every header into a dict; iterating
    builds the dict once."""

    __slots__ = ("raw", "_full")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._full: dict[str, str] | None = None

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        target = key.encode("latin-1", "replace")
        size = len(target)
        found: str | None = None
        for name, value in self.raw:
            if len(name) == size and name.lower() == target:
                text = value.decode("latin-1")
                found = text if found is None else f"{found}, {text}"
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def _dict(self) -> dict[str, str]:
        full = self._full
        if full is None:
            full = {}
            for name, value in self.raw:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                full[key] = f"{full[key]}, {text}" if key in full else text
            self._full = full
        return full

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


class RequestHeaders:
    """What the edge reads of one request: its head as parsed, with a lower-cased view built on first use."""

    __slots__ = ("method", "path", "raw", "query", "_map", "_view")

    def __init__(self, method: bytes, path: str, raw: list[tuple[bytes, bytes]], query: bytes) -> None:
        self.method = method
        self.path = path
        self.raw = raw
        self.query = query
        self._map: HeaderMap | None = None
        self._view: RequestView | None = None

    def header_map(self) -> Mapping[str, str]:
        """Header values by lower-case name (repeated ones joined by ", ")."""
        mapping = self._map
        if mapping is None:
            mapping = self._map = HeaderMap(self.raw)
        return mapping

    def request_view(self) -> RequestView:
        view = self._view
        if view is None:
            query = self.query[1:].decode("latin-1") if self.query else ""
            view = self._view = RequestView(self.method.decode("latin-1"), self.path, self.header_map(), query)
        return view


class Decision:
    """The edge's answer for one request."""

    __slots__ = ("lane", "routing_lane", "baggage", "needs_request")

    def __init__(self, lane: str, routing_lane: str, baggage: str, needs_request: bool) -> None:
        #: The request's lane ("" = base), carried in `baggage` from here on.
        self.lane = lane
        #: What the router is asked for: the lane, or the route canary's tag for this hop.
        self.routing_lane = routing_lane
        #: The `baggage` header sent upstream ("" = none).
        self.baggage = baggage
        #: Whether the outbound pipeline needs the request (a CanaryRule's sticky key reads it).
        self.needs_request = needs_request


_BASE = Decision("", "", "", False)


class Edge:
    """Decides each request's lane at the gateway. `lanes` is the rule state (`tidegate.agent.lanes.LaneState`)."""

    def __init__(self, lanes: object, service: str, draw: Draw = random.random) -> None:
        self.lanes = lanes
        self.service = service
        self.draw = draw
        #: Client lanes dropped at the edge (the metrics read it).
        self.dropped = 0

    @staticmethod
    def view(method: bytes, path: str, raw: list[tuple[bytes, bytes]], query: bytes) -> RequestHeaders:
        return RequestHeaders(method, path, raw, query)

    def decide(self, route: Route, request: RequestHeaders, peer: str, baggage: str = "") -> Decision:
        """`baggage`: the client's `baggage` header(s), joined (the proxy collects them while parsing)."""
        lanes = self.lanes
        coloring = lanes.coloring  # type: ignore[attr-defined]
        canary_rules = lanes.routing.canaries  # type: ignore[attr-defined]
        if not baggage and not coloring.rules and route.canary is None and not canary_rules:
            return _BASE
        key = lane_key()
        lane = ""
        if baggage and key in baggage:
            if route.trust_header and _trusted(route, request):
                lane = get_lane(baggage, key)
            else:
                self.dropped += 1
                baggage = with_lane(baggage, "", key)
        if not lane and coloring.rules:
            lane = coloring.lane_for(request.request_view(), self.draw, service=self.service)
        if lane:
            baggage = with_lane(baggage, lane, key)
        routing_lane = lane
        if not lane and route.canary is not None:
            routing_lane = self.canary_tag(route, request)
        return Decision(lane, routing_lane, baggage, bool(canary_rules))

    def canary_tag(self, route: Route, request: RequestHeaders) -> str:
        """The route canary's tag when this request goes to it, else "" (header > cookie > weight)."""
        canary = route.canary
        if canary is None:
            return ""
        headers = request.header_map()
        if canary.header:
            value = headers.get(canary.header)
            if value is not None:
                if value == "never":
                    return ""
                if value == "always" or value == canary.header_value:
                    return canary.tag
        if canary.cookie and "cookie" in headers:
            value = parse_cookies(headers["cookie"]).get(canary.cookie)
            if value == "always":
                return canary.tag
            if value == "never":
                return ""
        if canary.weight and int(self.draw() * BUCKETS) < round(canary.weight * (BUCKETS // 100)):
            return canary.tag
        return ""


def _trusted(route: Route, request: RequestHeaders) -> bool:
    presented = request.header_map().get(route.trust_header)
    return presented is not None and hmac.compare_digest(presented.encode(), route.trust_token.encode())
