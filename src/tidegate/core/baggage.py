"""The lane inside a W3C `baggage` header: read it, set it, remove it, touch nothing else.

Grammar (W3C Baggage): `key OWS "=" OWS value *(OWS ";" OWS property)` list
members separated by commas; keys are RFC 7230 tokens (case-sensitive), values
are baggage-octets with UTF-8 percent-encoding. Limits enforced here: at most
8192 bytes and 180 members for a header we write.

Every other member passes through byte-for-byte, properties and separators
included: edits splice our member into the original text instead of
re-serialising the list. Nothing here raises on any input: a malformed member
is passed on untouched and ignored for reading; an invalid lane is ignored and
the reason is returned for the caller to log. Two exceptions, made by
`sendable` on what arrives and on what we write: a member holding a character
no header can carry (outside printable ASCII and tab: raw UTF-8, controls) is
dropped, since no client library can send it (httpx raises, gRPC refuses the
call) and W3C forbids it; and empty list members (`a=1,,b=2`) are not passed on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote

#: The member tidegate owns.
LANE_KEY = "tidegate.lane"
MAX_BYTES = 8192
MAX_MEMBERS = 180

_LANE = re.compile(r"[A-Za-z0-9._-]{1,63}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_OWS = " \t"
#: What `sendable` must look at: a character no header carries, or an empty list member.
_UNSENDABLE = re.compile(r"[^\t\x20-\x7e]|(?:^|,)[ \t]*(?:,|$)")
_BAD_CHARACTER = re.compile(r"[^\t\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class Member:
    """One list member. `raw` is its exact text (surrounding whitespace excluded).

    `problem` is "" for a well-formed member; otherwise it says what is wrong,
    and `key`/`value` are whatever could be read (possibly "")."""

    raw: str
    key: str
    value: str
    properties: tuple[str, ...]
    problem: str = ""


class LaneReading(NamedTuple):
    """The lane a header carries ("" when none) and why a present value was refused."""

    lane: str
    problem: str = ""


class LaneEdit(NamedTuple):
    """A rewritten header, and why our member could not be written ("" when it was)."""

    header: str
    problem: str = ""


def is_valid_lane(lane: str) -> bool:
    """Lane names are 1-63 of `A-Z a-z 0-9 . _ -`."""
    return _LANE.fullmatch(lane) is not None


def join_headers(values: Iterable[str]) -> str:
    """Several `baggage` header lines are one list, joined by commas (RFC 7230 §3.2.2)."""
    return ",".join(v for v in values if v.strip(_OWS))


class Cleaned(NamedTuple):
    """A header every client library can send, and what was dropped from it ("" when nothing)."""

    header: str
    problem: str = ""


def sendable(header: str) -> Cleaned:
    """`header` without its empty list members and without the members holding a
    character outside printable ASCII and tab (raw UTF-8 or Latin-1 bytes, CR, LF, NUL);
    every other member is kept byte-for-byte. The usual header is returned as it is."""
    if _UNSENDABLE.search(header) is None:
        return Cleaned(header)
    kept: list[str] = []
    dropped = 0
    for segment in header.split(","):
        if not segment.strip(_OWS):
            continue
        if _BAD_CHARACTER.search(segment):
            dropped += 1
            continue
        kept.append(segment)
    problem = f"{dropped} baggage member(s) held characters a header cannot carry (non-ASCII or control); dropped" if dropped else ""
    return Cleaned(",".join(kept).strip(_OWS), problem)


def parse_member(text: str) -> Member:
    """Parse one list member (surrounding whitespace already removed); never raises."""
    head, _, rest = text.partition(";")
    properties = tuple(p.strip(_OWS) for p in rest.split(";")) if rest else ()
    key, eq, value = head.partition("=")
    key = key.strip(_OWS)
    value = value.strip(_OWS)
    if not eq:
        return Member(text, key, "", properties, "no '=' between key and value")
    if not _TOKEN.fullmatch(key):
        return Member(text, key, value, properties, "key is not a token")
    if not _VALUE.fullmatch(value):
        return Member(text, key, value, properties, "value holds a character baggage forbids")
    for prop in properties:
        problem = _property_problem(prop)
        if problem:
            return Member(text, key, value, properties, problem)
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        return Member(text, key, value, properties, "value is not percent-encoded UTF-8")
    return Member(text, key, decoded, properties)


def parse(header: str) -> tuple[Member, ...]:
    """Every non-empty list member of `header`, in order, malformed ones included."""
    members = []
    for segment in header.split(","):
        text = segment.strip(_OWS)
        if text:
            members.append(parse_member(text))
    return tuple(members)


def read_lane(header: str, key: str = LANE_KEY) -> LaneReading:
    """The lane in `header` under `key`: the first member with the key decides
    (as `set_lane` replaces the first); a malformed or invalid one reads as ""."""
    text = _first_member(header, key)
    if text is None:
        return LaneReading("")
    if ";" not in text:  # what we write ourselves: `key=lane`, no properties, no percent-escapes
        value = text[len(key) :].lstrip(_OWS)[1:].strip(_OWS)
        if _LANE.fullmatch(value):
            return LaneReading(value)
    member = parse_member(text)
    if member.problem:
        return LaneReading("", f"baggage member {key!r} is malformed: {member.problem}")
    if not is_valid_lane(member.value):
        return LaneReading("", f"lane {member.value[:80]!r} is not 1-63 of A-Z a-z 0-9 . _ -")
    return LaneReading(member.value)


def get_lane(header: str, key: str = LANE_KEY) -> str:
    """The valid lane `header` carries, or ""."""
    return read_lane(header, key).lane


def set_lane(header: str, lane: str, key: str = LANE_KEY) -> LaneEdit:
    """`header` (made `sendable`) with our member set to `lane` (removed when `lane` is "").

    The first member with `key` is replaced in place; further ones are removed;
    with none, ours is appended. When the result would exceed 8192 bytes or
    180 members, the lane wins: other members are dropped from the end until
    ours fits, and the reason names them. An invalid `lane` leaves our member
    out, with the reason."""
    header, problem = sendable(header)
    member = ""
    if lane:
        if is_valid_lane(lane):
            member = f"{key}={lane}"
        else:
            problem = _join(problem, f"lane {lane[:80]!r} is not 1-63 of A-Z a-z 0-9 . _ -; not propagated")
    if member and _first_member(header, key) == member and header.count(key) == 1:
        return LaneEdit(header, problem)  # already carries exactly this lane (the usual hop): nothing to do
    edited, others = _splice(header, key, member)
    if member and (others + 1 > MAX_MEMBERS or _size(edited) > MAX_BYTES):
        edited, cut = _make_room(edited, key)
        problem = _join(problem, f"baggage would exceed {MAX_BYTES} bytes or {MAX_MEMBERS} members with the lane; dropped {cut}")
    return LaneEdit(edited, problem)


def _make_room(header: str, key: str) -> tuple[str, str]:
    """`header` within the limits, other members dropped from the end (ours kept); and which were dropped."""
    segments = [segment for segment in header.split(",") if segment.strip(_OWS)]
    size = _size(",".join(segments))
    dropped: list[str] = []
    at = len(segments) - 1
    while at >= 0 and (len(segments) > MAX_MEMBERS or size > MAX_BYTES):
        text = segments[at].strip(_OWS)
        if not _is_ours(text, key):
            size -= _size(segments[at]) + 1
            dropped.append(parse_member(text).key[:40] or text[:40])
            del segments[at]
        at -= 1
    names = ", ".join(repr(name) for name in reversed(dropped[-5:]))
    more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
    return ",".join(segments).lstrip(_OWS), f"{len(dropped)} member(s) from the end ({names}{more})"


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def with_lane(header: str, lane: str, key: str = LANE_KEY) -> str:
    """`set_lane(...)` without the reason: the header to send."""
    return set_lane(header, lane, key).header


def _is_ours(text: str, key: str) -> bool:
    """Whether a stripped member has exactly `key` as its key (what `parse_member` would read)."""
    if not text.startswith(key):
        return False
    rest = text[len(key) :].lstrip(_OWS)
    return not rest or rest[0] in "=;"


def _first_member(header: str, key: str) -> str | None:
    """The stripped text of the first member with `key`, found without splitting the header."""
    at = header.find(key)
    while at >= 0:
        before = at - 1
        while before >= 0 and header[before] in _OWS:
            before -= 1
        if before < 0 or header[before] == ",":
            end = header.find(",", at)
            text = header[at : end if end >= 0 else len(header)].rstrip(_OWS)
            if _is_ours(text, key):
                return text
        at = header.find(key, at + 1)
    return None


def _splice(header: str, key: str, member: str) -> tuple[str, int]:
    """Replace/remove our members in the original text; also count the other members."""
    if key not in header:
        return _append(header, member), _count(header)
    segments = header.split(",")
    kept: list[str] = []
    placed = False
    others = 0
    for segment in segments:
        text = segment.strip(_OWS)
        if _is_ours(text, key):
            if member and not placed:
                start = segment.index(text)
                kept.append(segment[:start] + member + segment[start + len(text) :])
                placed = True
            continue
        if text:
            others += 1
        kept.append(segment)
    if not placed:
        return _append(",".join(kept), member), others
    return ",".join(kept), others


def _append(header: str, member: str) -> str:
    if not member:
        return header
    base = header.rstrip(_OWS)
    if not base:
        return member
    return f"{base}{member}" if base.endswith(",") else f"{base},{member}"


def _count(header: str) -> int:
    """Members in `header`: exact near the limit; below it, the cheap upper bound does."""
    bound = header.count(",") + 1
    if bound < MAX_MEMBERS:
        return bound
    return sum(1 for segment in header.split(",") if segment.strip(_OWS))


def _size(header: str) -> int:
    return len(header) if header.isascii() else len(header.encode("utf-8", "surrogatepass"))


def _property_problem(prop: str) -> str:
    name, eq, value = prop.partition("=")
    if not _TOKEN.fullmatch(name.strip(_OWS)):
        return "property key is not a token"
    if eq and not _VALUE.fullmatch(value.strip(_OWS)):
        return "property value holds a character baggage forbids"
    return ""
