"""The sans-I/O outbound call pipeline, driven by a fake adapter over a scripted transport, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.agent.outbound.fakes import (
    Broken,
    ClosedIdle,
    NothingSent,
    Passed,
    Response,
    StatusError,
    World,
    drive_async,
    instance,
)
from tidegate.agent.outbound.call import CONNECT_ATTEMPTS, ErrorKind, OutboundPipeline, netloc
from tidegate.agent.outbound.errors import LibraryErrors, set_request
from tidegate.core.coloring import RequestView
from tidegate.core.context import CONSUMER_HEADER, DRAINING_HEADER
from tidegate.errors import BlockedError, FlowBlockedError, NoInstanceError

HTTPX = LibraryErrors("httpx.ConnectError", "httpx.TransportError", set_request)
O1, O2, O3 = "10.0.0.1:9001", "10.0.0.1:9002", "10.0.0.1:9003"
GOVERNED = ("http://orders",)


def ok(status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {})


# -- pass-through and answers -------------------------------------------------------------------


def test_a_host_that_is_no_service_name_goes_out_untouched() -> None:
    world = World()
    assert isinstance(world.call("example.com", 443), Passed)
    assert world.of("route", "enter", "send", "observe", "leave") == [("route", "example.com", 443, "", (), None)]


def test_an_answer_ends_its_attempt_once_and_clears_the_instance_ejection() -> None:
    world = World()
    response = world.call("orders", 80)
    assert (response.status, response.instance) == (200, O1)
    assert world.of("route", "send", "succeeded", "done", "observe", "notice", "connect_failed") == [
        ("route", "orders", 80, "", (), None),
        ("send", O1),
        ("succeeded", "o1"),
        ("done", "o1", True),
        ("observe", "orders", True, 0.25),
    ]
    assert world.router.slots_taken() == 0 and [r.released for r in world.router.routes] == [1]


@pytest.mark.parametrize(("status", "is_ok"), [(200, True), (404, True), (499, True), (500, False), (503, False)])
def test_a_status_below_500_is_ok(status: int, is_ok: bool) -> None:
    world = World(governed=GOVERNED, script={O1: [ok(status)]})
    assert world.call().status == status
    assert world.of("done", "observe", "leave") == [
        ("done", "o1", is_ok),
        ("observe", "orders", is_ok, 0.25),
        ("leave", "http://orders", not is_ok),
    ]


def test_the_draining_header_marks_the_instance_draining() -> None:
    world = World(script={O1: [ok(headers={DRAINING_HEADER: "1"})]})
    assert world.call().status == 200
    assert world.of("notice", "succeeded", "done") == [("notice", "o1", O1, "response header"), ("done", "o1", True)]


# -- errors by kind -------------------------------------------------------------------------------


def test_nothing_sent_ejects_the_instance_and_retries_elsewhere() -> None:
    world = World(governed=GOVERNED, script={O1: [NothingSent], O2: [ok()]})
    assert world.call().instance == O2
    assert world.of("enter", "route", "send", "connect_failed", "done", "observe", "leave") == [
        ("enter", "http://orders"),
        ("route", "orders", None, "", (), None),
        ("send", O1),
        ("connect_failed", "o1"),
        ("route", "orders", None, "", ("o1",), None),  # the retry's slot is taken before the failed one is released, as today
        ("done", "o1", False),
        ("observe", "orders", False, 0.25),
        ("send", O2),
        ("done", "o2", True),
        ("observe", "orders", True, 0.25),
        ("leave", "http://orders", False),  # once per call: the last attempt was ok
    ]
    assert world.router.slots_taken() == 0


def test_retries_stop_after_connect_attempts_instances() -> None:
    instances = [instance("orders", n) for n in (1, 2, 3, 4)]
    world = World({"orders": instances}, governed=GOVERNED, script={i.address: [NothingSent] for i in instances})
    with pytest.raises(NothingSent):
        world.call()
    assert CONNECT_ATTEMPTS == 3
    assert [e[1] for e in world.of("send")] == [O1, O2, O3]
    assert world.of("connect_failed") == [("connect_failed", "o1"), ("connect_failed", "o2"), ("connect_failed", "o3")]
    assert [e[4] for e in world.of("route")] == [(), ("o1",), ("o1", "o2")]
    assert world.of("observe") == [("observe", "orders", False, 0.25)] * 3
    assert world.of("leave") == [("leave", "http://orders", True)]
    assert world.router.slots_taken() == 0


def test_a_retry_that_finds_no_instance_left_raises_the_connect_error() -> None:
    world = World({"orders": [instance("orders", 1), instance("orders", 2)]}, script={O1: [NothingSent], O2: [NothingSent]})
    with pytest.raises(NothingSent):
        world.call(errors=HTTPX)
    assert [e[1] for e in world.of("send")] == [O1, O2]
    assert len(world.of("route")) == 3 and world.router.slots_taken() == 0


def test_without_drain_signals_nothing_is_retried() -> None:
    world = World(lossless=False, script={O1: [NothingSent], O2: [ok()]})
    with pytest.raises(NothingSent):
        world.call()
    assert len(world.of("route")) == 1 and world.of("connect_failed", "succeeded", "recheck_due") == []
    assert world.of("done", "observe") == [("done", "o1", False), ("observe", "orders", False, 0.25)]


def test_a_connection_a_live_instance_closed_idle_is_retried_without_ejecting_it() -> None:
    # The keep-alive race: the instance's keep-alive timeout closed the pooled connection as the
    # request went out on it. Without tidegate the call fails; with it, a GET goes again (any
    # instance, a fresh connection) and nothing is ejected: the instance is healthy.
    world = World(script={O1: [ClosedIdle, ok()], O2: [ok()]})
    assert world.call().status == 200
    assert len(world.of("route")) == 2 and world.of("connect_failed") == []


def test_closed_idle_retries_on_live_instances_stop_after_connect_attempts() -> None:
    world = World(script={O1: [ClosedIdle] * 5, O2: [ClosedIdle] * 5})
    with pytest.raises(ClosedIdle):
        world.call()
    assert len(world.of("send")) == CONNECT_ATTEMPTS and world.of("connect_failed") == []
    assert world.router.slots_taken() == 0


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_connection_a_live_instance_closed_idle_is_not_retried_for_a_method_that_is_not_idempotent(method: str) -> None:
    world = World(script={O1: [ClosedIdle], O2: [ok()]})
    with pytest.raises(ClosedIdle):
        world.call(method=method)
    assert len(world.of("route")) == 1 and world.of("connect_failed") == []


def test_without_drain_signals_a_connection_closed_idle_is_not_retried() -> None:
    world = World(lossless=False, script={O1: [ClosedIdle], O2: [ok()]})
    with pytest.raises(ClosedIdle):
        world.call()
    assert len(world.of("route")) == 1


def test_a_connection_a_draining_instance_closed_idle_is_retried_elsewhere() -> None:
    world = World(script={O1: [ClosedIdle], O2: [ok()]})
    world.drains.draining.add(O1)
    assert world.call().instance == O2
    # The retry ejects it passively too, as today's retry_route does for every retry.
    assert world.of("connect_failed", "route") == [
        ("route", "orders", None, "", (), None),
        ("connect_failed", "o1"),
        ("route", "orders", None, "", ("o1",), None),
    ]


@pytest.mark.parametrize("method", ["POST", "PATCH", "post", "CONNECT"])
def test_a_connection_a_draining_instance_closed_unanswered_is_not_retried_for_a_method_that_is_not_idempotent(method: str) -> None:
    world = World(script={O1: [ClosedIdle], O2: [ok()]})
    world.drains.draining.add(O1)
    with pytest.raises(ClosedIdle):
        world.call(method=method)
    assert [e[1] for e in world.of("send")] == [O1]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "delete"])
def test_a_connection_a_draining_instance_closed_unanswered_is_retried_for_an_idempotent_method(method: str) -> None:
    world = World(script={O1: [ClosedIdle], O2: [ok()]})
    world.drains.draining.add(O1)
    assert world.call(method=method).instance == O2


def test_a_post_that_was_never_sent_is_retried_elsewhere() -> None:
    world = World(script={O1: [NothingSent], O2: [ok()]})
    assert world.call(method="POST").instance == O2


def test_closed_idle_retries_stop_after_connect_attempts_instances() -> None:
    instances = [instance("orders", n) for n in (1, 2, 3, 4)]
    world = World({"orders": instances}, script={i.address: [ClosedIdle] for i in instances})
    world.drains.draining.update(i.address for i in instances)
    with pytest.raises(ClosedIdle):
        world.call()
    assert [e[1] for e in world.of("send")] == [O1, O2, O3]


def test_connect_attempts_count_both_kinds() -> None:
    instances = [instance("orders", n) for n in (1, 2, 3, 4)]
    world = World({"orders": instances}, script={O1: [NothingSent], O2: [ClosedIdle], O3: [NothingSent], "10.0.0.1:9004": [ok()]})
    world.drains.draining.add(O2)
    with pytest.raises(NothingSent):
        world.call()
    assert [e[1] for e in world.of("send")] == [O1, O2, O3]


def test_other_errors_are_never_retried() -> None:
    world = World(governed=GOVERNED, script={O1: [Broken], O2: [ok()]})
    with pytest.raises(Broken):
        world.call()
    assert world.of("route", "connect_failed", "succeeded", "notice", "done", "observe", "leave") == [
        ("route", "orders", None, "", (), None),
        ("done", "o1", False),
        ("observe", "orders", False, 0.25),
        ("leave", "http://orders", True),
    ]


@pytest.mark.parametrize(("status", "is_ok"), [(404, True), (0, True), (502, False)])
def test_a_status_the_library_raised_on_is_that_attempts_outcome(status: int, is_ok: bool) -> None:
    world = World(governed=GOVERNED, script={O1: [StatusError(status)]})
    with pytest.raises(StatusError):
        world.call()
    assert world.of("done", "observe", "leave", "succeeded", "notice", "route") == [
        ("route", "orders", None, "", (), None),
        ("done", "o1", is_ok),
        ("observe", "orders", is_ok, 0.25),
        ("leave", "http://orders", not is_ok),
    ]


# -- admission ------------------------------------------------------------------------------------


def test_admission_comes_before_a_balancer_slot() -> None:
    world = World(governed=GOVERNED)
    world.call()
    assert [e[0] for e in world.events][:4] == ["recheck_due", "enter", "route", "send"]


def test_a_refused_call_takes_no_slot_and_raises_the_blocked_error_that_is_also_the_librarys() -> None:
    world = World(governed=GOVERNED)
    world.admission.refuse = FlowBlockedError("http://orders", "orders-limit", "over 3 per 1s", 0.4)
    request = httpx.Request("GET", "http://orders/x")
    with pytest.raises(httpx.HTTPError) as raised:
        world.call(errors=HTTPX, request=request)
    error = raised.value
    assert isinstance(error, FlowBlockedError) and isinstance(error, httpx.TransportError)
    assert (error.resource, error.rule, error.retry_after_s) == ("http://orders", "orders-limit", 0.4)
    assert error.request is request
    assert error.__suppress_context__
    assert world.events == [("recheck_due",), ("enter", "http://orders")]
    assert world.router.routes == []


def test_a_refused_call_answers_with_the_services_fallback() -> None:
    world = World(governed=GOVERNED)
    refusal = FlowBlockedError("http://orders", "orders-limit")
    world.admission.refuse = refusal
    seen: list[BlockedError] = []

    def fallback(error: BlockedError) -> Response:
        seen.append(error)
        return Response(200, instance="fallback")

    world.admission.fallbacks["orders"] = fallback
    assert world.call(errors=HTTPX).instance == "fallback"
    assert seen == [refusal] and type(seen[0]) is FlowBlockedError  # the fallback gets tidegate's own error
    assert world.of("route", "send", "observe", "leave", "done") == []
    call = world.pipeline.begin("orders")
    assert call is not None and call.refused is refusal and call.fallback.instance == "fallback"
    call.finish()  # harmless: a refused call holds nothing
    with pytest.raises(RuntimeError, match="refused"):
        call.attempt()
    assert world.of("leave", "done") == []


def test_a_service_no_rule_names_skips_admission() -> None:
    world = World(governed=("http://stock",))
    world.call()
    assert world.of("enter", "leave") == []


def test_without_admission_calls_are_routed_as_before() -> None:
    world = World()
    world.pipeline.admission = None
    assert world.call().status == 200


def test_the_throttling_wait_comes_before_the_first_attempt_and_is_not_counted_in_it() -> None:
    world = World(governed=GOVERNED)
    world.admission.wait_s = 0.5
    world.call()
    assert world.of("enter", "route", "sleep", "send", "observe") == [
        ("enter", "http://orders"),
        ("route", "orders", None, "", (), None),
        ("sleep", 0.5),
        ("send", O1),
        ("observe", "orders", True, 0.25),
    ]


# -- no instance ----------------------------------------------------------------------------------


def test_a_service_with_no_instance_raises_the_librarys_connect_error_with_the_request() -> None:
    world = World({}, empty=["orders"])
    request = httpx.Request("GET", "http://orders/x")
    with pytest.raises(httpx.ConnectError) as raised:
        world.call(errors=HTTPX, request=request, lane="gray")
    assert isinstance(raised.value, NoInstanceError) and (raised.value.service, raised.value.lane) == ("orders", "gray")
    assert raised.value.request is request
    assert world.of("enter", "leave", "observe") == []


def test_a_governed_call_that_finds_no_instance_leaves_admission_as_failed() -> None:
    world = World({}, empty=["orders"], governed=GOVERNED)
    with pytest.raises(NoInstanceError):
        world.call()
    assert world.of("enter", "route", "leave") == [
        ("enter", "http://orders"),
        ("route", "orders", None, "", (), None),
        ("leave", "http://orders", True),
    ]


def test_a_rule_naming_a_host_that_is_no_service_name_is_inert() -> None:
    world = World(governed=("http://example.com",))
    assert isinstance(world.call("example.com"), Passed)
    assert world.of("enter", "route", "leave") == [("route", "example.com", None, "", (), None)]


def test_a_host_that_stops_being_a_service_name_after_admission_leaves_it_at_once() -> None:
    world = World(governed=("http://example.com",))
    world.router.knows = lambda host: True  # type: ignore[method-assign]  # known when admitted, gone when routed
    assert isinstance(world.call("example.com"), Passed)
    assert world.of("enter", "route", "leave") == [
        ("enter", "http://example.com"),
        ("route", "example.com", None, "", (), None),
        ("leave", "http://example.com", False),
    ]


def test_each_service_is_told_to_on_first_call_once() -> None:
    world = World({"orders": [instance("orders", 1)], "stock": [instance("stock", 1)]})
    told: list[str] = []
    world.pipeline.on_first_call = told.append
    for host in ("orders", "orders", "example.com", "stock", "orders"):
        world.call(host)
    assert told == ["orders", "stock"]


# -- finishing ------------------------------------------------------------------------------------


def test_finish_is_once() -> None:
    world = World(governed=GOVERNED)
    call = world.pipeline.begin("orders")
    assert call is not None
    call.attempt()
    call.answered(200, None)
    call.answered(200, None)  # a second report of the same attempt changes nothing
    call.finish()
    call.finish()
    assert world.of("done", "observe", "leave", "succeeded") == [
        ("succeeded", "o1"),
        ("done", "o1", True),
        ("observe", "orders", True, 0.0),
        ("leave", "http://orders", False),
    ]


def test_finish_ends_an_attempt_left_open_as_failed() -> None:
    world = World(governed=GOVERNED)
    call = world.pipeline.begin("orders")
    assert call is not None
    call.attempt()
    world.clock.now += 1.5
    call.finish()  # e.g. the task was cancelled mid-send
    assert world.of("done", "observe", "leave") == [
        ("done", "o1", False),
        ("observe", "orders", False, 1.5),
        ("leave", "http://orders", True),
    ]


def test_finish_releases_a_route_never_attempted_without_counting_an_attempt() -> None:
    world = World(governed=GOVERNED)
    call = world.pipeline.begin("orders")
    assert call is not None
    call.finish()  # e.g. the throttling wait was cancelled
    assert world.of("done", "observe", "leave") == [("done", "o1", False), ("leave", "http://orders", True)]
    assert world.router.slots_taken() == 0


def test_no_attempt_after_the_last_one_failed() -> None:
    world = World(lossless=False)
    call = world.pipeline.begin("orders")
    assert call is not None
    call.attempt()
    assert not call.failed(ErrorKind.NOTHING_SENT)
    with pytest.raises(RuntimeError, match="no attempt left"):
        call.attempt()
    call.finish()
    assert world.of("done") == [("done", "o1", False)]


# -- async ------------------------------------------------------------------------------------------


def test_the_async_adapter_drives_it_the_same_way() -> None:
    script: dict[str, list[Any]] = {O1: [NothingSent], O2: [ok(headers={DRAINING_HEADER: "1"})]}
    sync, asynchronous = World(governed=GOVERNED, script=script), World(governed=GOVERNED, script=script)
    sync.admission.wait_s = asynchronous.admission.wait_s = 0.1
    assert sync.call().instance == O2
    response = asyncio.run(drive_async(asynchronous.pipeline, asynchronous.transport, asynchronous.sleep, "orders"))
    assert response.instance == O2
    assert asynchronous.events == [e for e in sync.events if e != ("recheck_due",)]


def test_a_cancelled_async_call_releases_its_instance_and_leaves_admission() -> None:
    world = World(governed=GOVERNED, script={O1: [asyncio.CancelledError]})
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(drive_async(world.pipeline, world.transport, world.sleep, "orders"))
    assert world.of("done", "observe", "leave") == [
        ("done", "o1", False),
        ("observe", "orders", False, 0.25),
        ("leave", "http://orders", True),
    ]
    assert world.router.slots_taken() == 0


# -- what every attempt carries -------------------------------------------------------------------


def test_every_attempt_carries_the_consumer_header() -> None:
    world = World(script={O1: [NothingSent], O2: [ok()]})
    world.call()
    assert [headers for _, _, headers in world.transport.sent] == [((CONSUMER_HEADER, "frontend"),)] * 2
    world.consumer = "frontend@127.0.0.1:7001"  # the admin address became known
    world.call()
    assert world.transport.sent[-1][2] == ((CONSUMER_HEADER, "frontend@127.0.0.1:7001"),)
    first, second = world.pipeline.begin("orders"), world.pipeline.begin("orders")
    assert first is not None and second is not None and first.headers is second.headers  # shared, not built per call
    world.consumer = ""
    call = world.pipeline.begin("orders")
    assert call is not None and call.headers == ()


def test_the_lane_and_the_inbound_request_ride_every_route() -> None:
    world = World(script={O1: [NothingSent], O2: [ok()]})
    inbound = RequestView("GET", "/cart", {"x-user": "7"})
    world.call("orders", 8080, lane="gray", inbound=inbound)
    assert world.of("route") == [("route", "orders", 8080, "gray", (), inbound), ("route", "orders", None, "gray", ("o1",), inbound)]


def test_netloc_brackets_an_ipv6_host() -> None:
    assert netloc(instance("orders", 1)) == O1
    assert netloc(instance("orders", 1).__class__("v6", "orders", "::1", 8000)) == "[::1]:8000"


# -- idle connections to drop ---------------------------------------------------------------------


class Client:
    """Stands in for an httpx.Client / requests.Session / aiohttp.ClientSession."""


def test_each_client_drops_each_draining_address_once() -> None:
    world = World()
    first, second = Client(), Client()
    assert world.pipeline.stale_addresses(first) == ()
    world.drains.drops.append(("10.0.0.1", 9001))
    assert world.pipeline.stale_addresses(first) == [("10.0.0.1", 9001)]
    assert world.pipeline.stale_addresses(first) == ()
    world.drains.drops.append(("10.0.0.1", 9002))
    assert world.pipeline.stale_addresses(first) == [("10.0.0.1", 9002)]
    assert world.pipeline.stale_addresses(second) == [("10.0.0.1", 9001), ("10.0.0.1", 9002)]
    assert world.pipeline.stale_addresses(7) == ()  # not weak-referenceable: nothing to remember it by
    assert world.of("recheck_due") == [("recheck_due",)] * 6


def test_stale_addresses_come_through_the_adapter_before_routing() -> None:
    world = World()
    world.drains.drops.append(("10.0.0.1", 9003))
    dropped: list[Any] = []
    world.call(client=Client(), dropped=dropped)
    assert dropped == [[("10.0.0.1", 9003)]]
    assert [e[0] for e in world.events][:2] == ["recheck_due", "route"]


def test_without_drain_signals_there_is_nothing_to_drop() -> None:
    world = World(lossless=False)
    world.drains.drops.append(("10.0.0.1", 9001))
    assert world.pipeline.stale_addresses(Client()) == ()
    assert world.of("recheck_due") == []


def test_a_pipeline_needs_only_a_router() -> None:
    world = World()
    pipeline = OutboundPipeline(world.router)
    call = pipeline.begin("orders")
    assert call is not None and call.headers == () and call.wait_s == 0.0
    call.attempt()
    assert not call.failed(ErrorKind.NOTHING_SENT)  # no drain signals: no retry
    call.finish()
    assert world.of("done") == [("done", "o1", False)]


def test_a_router_failure_after_admission_leaves_it() -> None:
    world = World(governed=GOVERNED)

    def broken(*args: Any) -> None:
        raise KeyError("a bug in the router")

    world.router.route = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyError):
        world.call()
    assert world.of("enter", "leave") == [("enter", "http://orders"), ("leave", "http://orders", True)]
