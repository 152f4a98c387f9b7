"""Property-based fuzz of the agent's inbound side: whatever a caller sends, tidegate causes no 5xx
and every other baggage member reaches the next hop as it came.

Over real sockets: one app under `tidegate run` (uvicorn) gets requests written
byte by byte (any bytes but CR, LF and NUL in `baggage` and `x-tidegate-consumer`,
several `baggage` lines, lane members valid or not, with properties or not);
the app calls its own `/echo` through httpx four times at once and answers what
each call carried. The properties: no 5xx; the four calls carried the same
header; its members other than the lane are exactly the caller's members a
header can carry (printable ASCII), in order; the lane, when one arrives, is the
caller's valid one or none. In-process: the message-header and gRPC-metadata
readers and writers never raise on any value and write only what a header can carry.

Bounded in time: a fixed number of examples, no shrinking deadline.
"""

from __future__ import annotations

import socket
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agent.conftest import uvicorn
from tests.support.procs import free_port, http_ok, wait_until
from tidegate.agent.instrumentation import aio_pika as amqp_lanes
from tidegate.agent.instrumentation import grpc as grpc_lanes
from tidegate.agent.instrumentation import redis as redis_lanes
from tidegate.agent.instrumentation.base import lane_baggage
from tidegate.core import context
from tidegate.core.baggage import LANE_KEY, is_valid_lane, parse_member, sendable

LANE_APPS = str(Path(__file__).resolve().parent / "lane_apps")

LANE = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=63)
TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-", min_size=1, max_size=10)
#: Any byte a request line can hold in a header value (the server itself refuses CR, LF and NUL).
RAW_BYTES = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))


@st.composite
def member(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["plain", "lane", "raw", "property"]))
    if kind == "plain":
        return f"{draw(TOKEN)}={draw(TOKEN)}".encode()
    if kind == "lane":
        value = draw(st.one_of(LANE, st.text(max_size=12).map(lambda t: t.replace(",", ""))))
        return f"{LANE_KEY}={value}".encode("utf-8", "replace")
    if kind == "property":
        return f"{draw(TOKEN)}={draw(TOKEN)};{draw(TOKEN)}".encode()
    return draw(RAW_BYTES).replace(b",", b"")


BAGGAGE_LINES = st.lists(st.lists(member(), max_size=6).map(lambda ms: b",".join(ms)), max_size=3)


def raw_request(port: int, lines: list[bytes], consumer: bytes | None) -> tuple[int, bytes]:
    """Send GET /probe?via=gather with these header lines; the status and body of the answer."""
    head = [b"GET /probe?via=gather HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [b"baggage: " + line for line in lines]
    if consumer is not None:
        head.append(b"x-tidegate-consumer: " + consumer)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def others(header: str) -> list[str]:
    """The members of `header` that are not the lane's, stripped, in order."""
    kept = []
    for segment in header.split(","):
        text = segment.strip(" \t")
        if text and parse_member(text).key != LANE_KEY:
            kept.append(text)
    return kept


def expected_lane(lines: list[bytes]) -> str:
    joined = sendable(",".join(line.decode("latin-1") for line in lines)).header
    for segment in joined.split(","):
        parsed = parse_member(segment.strip(" \t"))
        if parsed.key == LANE_KEY:
            return parsed.value if not parsed.problem and is_valid_lane(parsed.value) else ""
    return ""


@pytest.fixture
def app_port(control_plane: Any, start: Any) -> int:
    port = free_port()
    start(
        "fuzzed",
        "fuzzed",
        uvicorn("--app-dir", LANE_APPS, "propagation_app:app", "--port", str(port)),
        control_plane.url,
        env={"APP_PORT": str(port), "TIDEGATE_LOG_LEVEL": "INFO"},
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), what="the app to serve")
    return port


def test_any_inbound_headers_cause_no_5xx_and_keep_the_other_members(app_port: int) -> None:
    import json

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(BAGGAGE_LINES, st.one_of(st.none(), RAW_BYTES))
    def one_request(lines: list[bytes], consumer: bytes | None) -> None:
        status, body = raw_request(app_port, lines, consumer)
        assert status < 500, (status, body[:300])
        if status != 200:
            return  # the server's own parser refused the request: nothing of tidegate ran
        seen = json.loads(body)["seen"]
        assert len(seen) == 4 and len(set(seen)) == 1, seen
        carried = seen[0]
        assert carried.isascii(), carried
        caller = ",".join(line.decode("latin-1") for line in lines)
        assert others(carried) == others(sendable(caller).header)
        lane = context.from_headers(carried, "").lane
        assert lane in ("", expected_lane(lines)), (carried, lines)

    one_request()


# -- message headers and gRPC metadata, in process ------------------------------------------

ANY_VALUE = st.one_of(st.none(), st.binary(max_size=30), st.text(max_size=30), st.integers(), st.booleans())


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=15), st.binary(max_size=15), st.just(LANE_KEY), st.just(LANE_KEY.encode())), ANY_VALUE, max_size=5
    )
)
def test_message_headers_of_any_shape_read_as_a_valid_lane_or_none(fields: dict[Any, Any]) -> None:
    for lane in (redis_lanes.lane_of(fields), amqp_lanes.lane_of(fields)):
        assert lane == "" or is_valid_lane(lane)
    plan = redis_lanes.StreamLanes("gray", "billing", set).plan(b"group@gray", [[b"stream", [(b"1-0", fields)]]])
    assert len(plan.claims) + sum(len(ids) for ids in plan.drop.values()) == 1


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=80), st.one_of(st.just(""), LANE))
def test_a_consumers_lane_edit_of_any_message_baggage_is_sendable(baggage: str, lane: str) -> None:
    carried = context.from_headers(baggage, "").with_lane(lane)
    written = lane_baggage(carried.baggage, lane) if lane else carried.baggage
    assert sendable(written).header == written and written.isascii()
    assert others(written) == others(sendable(baggage).header)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["baggage", "x-tidegate-consumer", "other"]), st.one_of(st.text(max_size=40), st.binary(max_size=40))),
        max_size=5,
    ),
    st.one_of(st.just(""), LANE),
)
def test_grpc_metadata_of_any_shape_gives_a_context_and_sendable_outgoing_metadata(metadata: list[tuple[str, Any]], lane: str) -> None:
    found = grpc_lanes.incoming_context(metadata)
    token = context.enter(found.with_lane(lane) if lane else found)
    try:
        outgoing = grpc_lanes.outgoing_metadata((("other", "x"),))
    finally:
        context.leave(token)
    for key, value in outgoing or ():
        if key == "baggage":
            assert isinstance(value, str) and sendable(value).header == value
