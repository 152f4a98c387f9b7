"""The prewarm plan: env parsing, every malformed value named, live overlay."""

from __future__ import annotations

import pytest

from tidegate.core.prewarm import (
    PrewarmPlan,
    PrewarmSpecError,
    WarmupRequest,
    overlay,
    parse_warmup_requests,
    plan_from_env,
)


def test_warmup_requests_parse_with_counts() -> None:
    assert parse_warmup_requests("GET /catalog x20, GET /health x5,post /search") == (
        WarmupRequest("GET", "/catalog", 20),
        WarmupRequest("GET", "/health", 5),
        WarmupRequest("POST", "/search", 1),
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("GET catalog", "'GET catalog' is not 'METHOD /path xN'"),
        ("FETCH /x", "method FETCH is not one of"),
        ("GET /x x0", "count must be 1..10000"),
        ("GET /x x20000", "count must be 1..10000"),
        ("GET /x 20", "'GET /x 20' is not"),
    ],
)
def test_malformed_warmup_requests_name_the_variable_and_the_item(text: str, named: str) -> None:
    with pytest.raises(PrewarmSpecError) as caught:
        parse_warmup_requests(text)
    assert str(caught.value).startswith("TIDEGATE_WARMUP_REQUESTS: ")
    assert named in str(caught.value)


def test_defaults_prewarm_pools_not_http_and_wait_for_nothing_more() -> None:
    assert plan_from_env({}) == (PrewarmPlan(), [])
    assert PrewarmPlan().sqlalchemy and PrewarmPlan().redis and not PrewarmPlan().http
    assert PrewarmPlan().http_request == WarmupRequest("HEAD", "/")


def test_the_http_prewarm_request_is_one_method_and_path() -> None:
    plan, problems = plan_from_env({"TIDEGATE_PREWARM_HTTP": "on", "TIDEGATE_PREWARM_HTTP_REQUEST": "get /health"})
    assert (plan.http, plan.http_request, problems) == (True, WarmupRequest("GET", "/health"), [])
    for bad in ("GET /a, GET /b", "GET /a x2", "/health"):
        plan, problems = plan_from_env({"TIDEGATE_PREWARM_HTTP_REQUEST": bad})
        assert plan.http_request == WarmupRequest("HEAD", "/") and [p.setting for p in problems] == ["TIDEGATE_PREWARM_HTTP_REQUEST"]


def test_env_switches_and_values() -> None:
    plan, problems = plan_from_env(
        {
            "TIDEGATE_PREWARM": "off",
            "TIDEGATE_PREWARM_REDIS": "on",
            "TIDEGATE_PREWARM_SERVICES": "orders, stock",
            "TIDEGATE_WARMUP_REQUESTS": "GET /a x2",
            "TIDEGATE_REGISTER_DELAY": "1.5",
        }
    )
    assert problems == []
    assert plan == PrewarmPlan(
        sqlalchemy=False,
        redis=True,
        http=False,
        services=("orders", "stock"),
        warmup_requests=(WarmupRequest("GET", "/a", 2),),
        register_delay_s=1.5,
    )


def test_each_bad_variable_is_reported_and_keeps_its_default() -> None:
    plan, problems = plan_from_env(
        {
            "TIDEGATE_PREWARM_SQLALCHEMY": "maybe",
            "TIDEGATE_REGISTER_DELAY": "-1",
            "TIDEGATE_WARMUP_REQUESTS": "GET",
            "TIDEGATE_PREWARM_SERVICES": "ok,not ok",
            "TIDEGATE_PREWARM_HTTP": "on",
        }
    )
    assert plan == PrewarmPlan(http=True)
    assert sorted(p.setting for p in problems) == [
        "TIDEGATE_PREWARM_SERVICES",
        "TIDEGATE_PREWARM_SQLALCHEMY",
        "TIDEGATE_REGISTER_DELAY",
        "TIDEGATE_WARMUP_REQUESTS",
    ]


def test_live_settings_overlay_the_local_plan() -> None:
    local = PrewarmPlan(services=("orders",), register_delay_s=2.0)
    live = {"service": "me", "prewarmSqlAlchemy": False, "warmupRequests": "GET /x x3", "registerDelaySeconds": 0}
    assert overlay(local, live) == PrewarmPlan(
        sqlalchemy=False, services=("orders",), warmup_requests=(WarmupRequest("GET", "/x", 3),), register_delay_s=0.0
    )
    assert overlay(local, {"service": "me"}) == local
