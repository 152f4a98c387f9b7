"""Coloring: each match type, rule order, an existing lane kept, malformed input never raising."""

from __future__ import annotations

import random

import pytest

from tidegate.core.coloring import (
    Coloring,
    ColoringRule,
    Condition,
    MatchKind,
    Percentage,
    RequestKey,
    RequestView,
    Source,
    StringMatch,
    parse_cookies,
    parse_query,
    sticky_bucket,
)


def never() -> float:
    raise AssertionError("the random draw must not be used here")


def view(path: str = "/", *, method: str = "GET", headers: dict[str, str] | None = None, query: str = "") -> RequestView:
    return RequestView(method, path, headers or {}, query)


def rule(lane: str, source: Source, name: str, match: StringMatch, **kwargs: object) -> ColoringRule:
    return ColoringRule(lane, (Condition(RequestKey(source, name), match),), **kwargs)  # type: ignore[arg-type]


EXACT_BETA = StringMatch(MatchKind.EXACT, "beta")


@pytest.mark.parametrize(
    ("condition", "request_view", "expected"),
    [
        (rule("gray", Source.HEADER, "x-env", EXACT_BETA), view(headers={"x-env": "beta"}), "gray"),
        (rule("gray", Source.HEADER, "x-env", EXACT_BETA), view(headers={"x-env": "betamax"}), ""),
        (rule("gray", Source.HEADER, "x-env", StringMatch(MatchKind.PREFIX, "bet")), view(headers={"x-env": "betamax"}), "gray"),
        (rule("gray", Source.HEADER, "x-env", StringMatch(MatchKind.PRESENT)), view(headers={"x-env": ""}), "gray"),
        (rule("gray", Source.HEADER, "x-env", StringMatch(MatchKind.PRESENT)), view(), ""),
        (rule("gray", Source.HEADER, "x-uid", StringMatch.regex(r"\d{3}")), view(headers={"x-uid": "123"}), "gray"),
        (rule("gray", Source.HEADER, "x-uid", StringMatch.regex(r"\d{3}")), view(headers={"x-uid": "1234"}), ""),
        (rule("gray", Source.COOKIE, "beta", EXACT_BETA), view(headers={"cookie": "a=1; beta=beta"}), "gray"),
        (rule("gray", Source.COOKIE, "beta", EXACT_BETA), view(headers={"cookie": 'beta="beta"'}), "gray"),
        (rule("gray", Source.COOKIE, "beta", EXACT_BETA), view(headers={"cookie": "beta=alpha"}), ""),
        (rule("gray", Source.QUERY, "env", EXACT_BETA), view(query="x=1&env=beta"), "gray"),
        (rule("gray", Source.QUERY, "env", EXACT_BETA), view(query="env=be%74a"), "gray"),
        (rule("gray", Source.QUERY, "env", EXACT_BETA), view(query="env=alpha"), ""),
        (rule("gray", Source.PATH, "", StringMatch(MatchKind.PREFIX, "/api/v2/")), view("/api/v2/orders"), "gray"),
        (rule("gray", Source.PATH, "", StringMatch(MatchKind.EXACT, "/index")), view("/index/x"), ""),
        (rule("gray", Source.PATH, "", StringMatch.regex(r"/orders/\d+")), view("/orders/42"), "gray"),
        (rule("gray", Source.METHOD, "", StringMatch(MatchKind.EXACT, "POST")), view(method="POST"), "gray"),
        (rule("gray", Source.METHOD, "", StringMatch(MatchKind.EXACT, "POST")), view(), ""),
    ],
)
def test_each_match_type(condition: ColoringRule, request_view: RequestView, expected: str) -> None:
    assert Coloring([condition]).lane_for(request_view, never) == expected


def test_all_conditions_of_a_rule_must_hold() -> None:
    both = ColoringRule(
        "gray",
        (
            Condition(RequestKey(Source.HEADER, "x-env"), EXACT_BETA),
            Condition(RequestKey(Source.PATH), StringMatch(MatchKind.PREFIX, "/api")),
        ),
    )
    coloring = Coloring([both])
    assert coloring.lane_for(view("/api/x", headers={"x-env": "beta"}), never) == "gray"
    assert coloring.lane_for(view("/web", headers={"x-env": "beta"}), never) == ""


def test_first_matching_rule_wins() -> None:
    coloring = Coloring(
        [
            rule("blue", Source.HEADER, "x-env", EXACT_BETA),
            rule("gray", Source.PATH, "", StringMatch(MatchKind.PREFIX, "/")),
        ]
    )
    assert coloring.lane_for(view("/a", headers={"x-env": "beta"}), never) == "blue"
    assert coloring.lane_for(view("/a"), never) == "gray"


def test_a_request_with_a_lane_keeps_it() -> None:
    coloring = Coloring([rule("gray", Source.PATH, "", StringMatch(MatchKind.PREFIX, "/"))])
    assert coloring.lane_for(view("/a"), never, current_lane="blue") == "blue"


def test_rules_scoped_to_other_services_are_skipped() -> None:
    coloring = Coloring([rule("gray", Source.PATH, "", StringMatch(MatchKind.PREFIX, "/"), services=frozenset({"web"}))])
    assert coloring.lane_for(view("/a"), never, service="orders") == ""
    assert coloring.lane_for(view("/a"), never, service="web") == "gray"


def test_percentage_is_sticky_by_key_and_close_to_its_share() -> None:
    five_percent = ColoringRule("gray", percentage=Percentage(5.0, RequestKey(Source.HEADER, "x-user-id"), salt="gray"))
    coloring = Coloring([five_percent])
    lanes = [coloring.lane_for(view(headers={"x-user-id": f"user-{i}"}), never) for i in range(10_000)]
    # CRC-32 is the same on every platform, so the exact count is fixed: 516 of 10 000 (5.16%).
    assert lanes.count("gray") == 516
    again = [coloring.lane_for(view(headers={"x-user-id": f"user-{i}"}), never) for i in range(10_000)]
    assert again == lanes


def test_percentage_sticky_by_cookie() -> None:
    rule_ = ColoringRule("gray", percentage=Percentage(50.0, RequestKey(Source.COOKIE, "uid"), salt="gray"))
    inside = next(f"u{i}" for i in range(100) if sticky_bucket(f"u{i}", "gray") < 5000)
    outside = next(f"u{i}" for i in range(100) if sticky_bucket(f"u{i}", "gray") >= 5000)
    coloring = Coloring([rule_])
    assert coloring.lane_for(view(headers={"cookie": f"uid={inside}"}), never) == "gray"
    assert coloring.lane_for(view(headers={"cookie": f"uid={outside}"}), never) == ""


def test_percentage_without_the_key_uses_the_draw() -> None:
    coloring = Coloring([ColoringRule("gray", percentage=Percentage(30.0, RequestKey(Source.HEADER, "x-user-id")))])
    assert coloring.lane_for(view(), lambda: 0.2999) == "gray"
    assert coloring.lane_for(view(), lambda: 0.3) == ""
    rng = random.Random(7)
    hits = sum(coloring.lane_for(view(), rng.random) == "gray" for _ in range(10_000))
    assert 2_800 < hits < 3_200


def test_percentage_edges() -> None:
    assert Coloring([ColoringRule("gray", percentage=Percentage(0.0))]).lane_for(view(), lambda: 0.0) == ""
    assert Coloring([ColoringRule("gray", percentage=Percentage(100.0))]).lane_for(view(), lambda: 0.99999) == "gray"


def test_stable_bucket_is_pinned() -> None:
    # Fixed by CRC-32 (zlib): the same on every run, process and platform.
    assert sticky_bucket("alice", "orders") == 7012
    assert sticky_bucket("alice") == 6393


@pytest.mark.parametrize(
    "cookie",
    ["", ";;;", "=", "a", 'a="', "==x", "a=1;;b", "\x00\xff=\u2603", "a=1; a=2", "%zz=%zz", '"; beta="'],
)
def test_malformed_cookies_never_raise(cookie: str) -> None:
    coloring = Coloring([rule("gray", Source.COOKIE, "beta", EXACT_BETA)])
    assert coloring.lane_for(view(headers={"cookie": cookie}), never) == ""


@pytest.mark.parametrize("query", ["%", "&&&", "=&=", "a=%ff%fe", "a" * 5000, "\u2603=\x00", ";;;"])
def test_malformed_query_strings_never_raise(query: str) -> None:
    coloring = Coloring([rule("gray", Source.QUERY, "env", EXACT_BETA)])
    assert coloring.lane_for(view(query=query), never) == ""


def test_cookie_and_query_parsing() -> None:
    assert parse_cookies('a=1; b="two"; a=3; =x; c') == {"a": "1", "b": "two"}
    assert parse_query("a=1&b=&a=2&c=%20x") == {"a": "1", "b": "", "c": " x"}


def test_cookies_are_parsed_only_when_a_rule_needs_them() -> None:
    request_view = view("/api", headers={"cookie": "beta=beta"})
    Coloring([rule("gray", Source.PATH, "", StringMatch(MatchKind.PREFIX, "/api"))]).lane_for(request_view, never)
    assert request_view._cookies is None
