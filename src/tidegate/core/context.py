"""What a governed request carries from hop to hop: its lane, the baggage to pass on, who called.

Inbound adapters read it from the request's headers (`from_headers`) and
`enter` it for the request's duration; outbound adapters read `current()` and
write `outbound_headers`. A contextvar, so it follows asyncio tasks on its own
(threads need their context copied; the lanes instrumentation does that).

Header contract between tidegate agents:
  `baggage: tidegate.lane=<lane>` (W3C; other members pass through untouched);
  `x-tidegate-consumer: <service>[; admin=<host:port>]` on calls between
  services, so a provider knows its origin (per-origin limits) and where to
  send a direct drain notice.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from dataclasses import dataclass

from tidegate.core.baggage import LANE_KEY, LaneEdit, read_lane, sendable, set_lane, with_lane
from tidegate.core.coloring import RequestView

CONSUMER_HEADER = "x-tidegate-consumer"
#: Set on every response of a draining instance (with `Connection: close`).
DRAINING_HEADER = "x-tidegate-draining"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,80}:[0-9]{1,5}$")


@dataclass(frozen=True, slots=True)
class RequestContext:
    lane: str = ""  # "" is the base lane
    baggage: str = ""  # the inbound baggage header, passed on with our member kept current
    origin: str = ""  # the calling service, "" when unknown
    origin_admin: str = ""  # the calling instance's admin address, for a direct drain notice
    problem: str = ""  # why a header was ignored, for the adapter to log; "" when all was well
    #: The inbound request as coloring saw it, kept so a canary's sticky key
    #: (e.g. header x-user-id) is read from it on each outbound call; None
    #: when no lane rule was in force at entry.
    request: RequestView | None = None

    def with_lane(self, lane: str) -> RequestContext:
        return RequestContext(lane, self.baggage, self.origin, self.origin_admin, self.problem, self.request)

    def with_request(self, lane: str, request: RequestView) -> RequestContext:
        """This context with the lane coloring gave and the request its canaries read."""
        return RequestContext(lane, self.baggage, self.origin, self.origin_admin, self.problem, request)


#: The baggage member that carries the lane; `set_lane_key` changes it once, at boot
#: (`TIDEGATE_LANE_KEY`), for a fleet that already uses another name.
_lane_key = LANE_KEY
_KEY = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


def set_lane_key(key: str) -> None:
    """Carry the lane in baggage member `key`; ValueError when it is not a baggage key (a token)."""
    global _lane_key
    if not _KEY.match(key):
        raise ValueError(f"{key!r} is not a baggage key (an RFC 7230 token of at most 64 characters)")
    _lane_key = key


def lane_key() -> str:
    return _lane_key


def baggage_with_lane(header: str, lane: str) -> str:
    """`header` with our lane member set to `lane`, every other sendable member untouched."""
    return with_lane(header, lane, _lane_key)


def lane_edit(header: str, lane: str) -> LaneEdit:
    """`baggage_with_lane` with the reason when members were dropped or the lane left out."""
    return set_lane(header, lane, _lane_key)


EMPTY = RequestContext()
_current: ContextVar[RequestContext] = ContextVar("tidegate_request", default=EMPTY)


def current() -> RequestContext:
    return _current.get()


def enter(context: RequestContext) -> Token[RequestContext]:
    return _current.set(context)


def leave(token: Token[RequestContext]) -> None:
    _current.reset(token)


def parse_consumer(value: str) -> tuple[str, str, str]:
    """(service, admin address, problem) from an `x-tidegate-consumer` value; never raises."""
    service, _, rest = value.partition(";")
    service = service.strip()
    admin = ""
    problem = ""
    if not _NAME.match(service):
        return "", "", f"{CONSUMER_HEADER}: {value[:80]!r} does not start with a service name"
    for part in rest.split(";"):
        key, _, val = part.strip().partition("=")
        if key == "admin":
            if _ADDRESS.match(val.strip()):
                admin = val.strip()
            else:
                problem = f"{CONSUMER_HEADER}: admin address {val[:80]!r} is not host:port"
    return service, admin, problem


def from_headers(baggage: str, consumer: str, lane_key: str | None = None) -> RequestContext:
    """The context of an inbound request from its `baggage` and consumer headers; never raises.

    The baggage kept is `sendable`: members no header can carry and empty ones are dropped."""
    if not baggage and not consumer:
        return EMPTY
    baggage, cleaning = sendable(baggage) if baggage else ("", "")
    lane, problem = read_lane(baggage, lane_key or _lane_key) if baggage else ("", "")
    origin, admin, consumer_problem = parse_consumer(consumer) if consumer else ("", "", "")
    return RequestContext(lane, baggage, origin, admin, "; ".join(p for p in (cleaning, problem, consumer_problem) if p))


def outbound_baggage(context: RequestContext, lane_key: str | None = None) -> str:
    """The `baggage` value an outbound call carries ("" for none): the inbound members, our lane current."""
    if not context.lane:
        return context.baggage
    return with_lane(context.baggage, context.lane, lane_key or _lane_key)


def consumer_value(service: str, admin_address: str = "") -> str:
    return f"{service}; admin={admin_address}" if admin_address else service
