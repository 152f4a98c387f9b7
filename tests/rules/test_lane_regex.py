"""Regexes a TrafficLane carries are matched in linear time; constructs that need backtracking are refused."""

from __future__ import annotations

import pytest

from tidegate.core.coloring import RequestView
from tidegate.errors import RuleError
from tidegate.rules import validate
from tidegate.rules.lanes import TrafficLane, compile_coloring


def lane(match: object, where: str = "headers", name: str = "x-user") -> dict:
    http = {"uri": match} if where == "uri" else {where: {name: match}}
    return {
        "apiVersion": "traffic.opensergo.io/v1alpha1",
        "kind": "TrafficLane",
        "metadata": {"name": "gray"},
        "spec": {"lane": {"name": "gray"}, "rules": [{"http": http}]},
    }


def never() -> float:
    raise AssertionError("no draw")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("where", "pattern", "value"),
    [
        ("headers", "(a+)+", "a" * 40 + "!"),  # exponential under `re`: hours at 40 characters
        ("cookies", "(a|aa)+", "a" * 60 + "!"),
        ("query", "(x+x+)+y", "x" * 50),
        ("uri", "(/a*)*$", "/" + "a" * 60 + "!"),
    ],
)
def test_a_backtracking_pattern_cannot_stall_coloring(where: str, pattern: str, value: str) -> None:
    coloring, problems = compile_coloring([lane({"regex": pattern}, where, "k")])
    assert problems == []
    headers = {"k": value, "cookie": f"k={value}"}
    view = RequestView("GET", value if where == "uri" else "/", headers, f"k={value}")
    assert coloring.lane_for(view, never) == ""
    ok_value = value.rstrip("!y").replace("!", "") + ("y" if where == "query" else "")
    ok = RequestView("GET", ok_value if where == "uri" else "/", {"k": ok_value, "cookie": f"k={ok_value}"}, f"k={ok_value}")
    assert coloring.lane_for(ok, never) == "gray"


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(\d)\1", "backreference"),
        ("(?=1)1", "lookahead"),
        ("(?<!x)1", "negative lookbehind"),
        ("(?>1+)", "atomic group"),
        ("1++", "possessive"),
        ("a{99999999999}", "too large"),
        ("a{1001}", "at most 1000"),
        ("(?:a{1000}){1000}", "more than"),
        ("[", "not a valid regular expression"),
    ],
)
def test_a_refused_regex_names_the_field_and_the_construct(pattern: str, named: str) -> None:
    with pytest.raises(RuleError) as refused:
        validate(lane({"regex": pattern}))
    assert refused.value.field == "spec.rules[0].http.headers.x-user.regex"
    assert named in refused.value.reason


def test_a_linear_regex_still_matches_whole_values() -> None:
    parsed = validate(lane({"regex": r"1\d{4}"}))
    assert isinstance(parsed, TrafficLane)
    coloring, _ = compile_coloring([lane({"regex": r"1\d{4}"})])
    assert coloring.lane_for(RequestView("GET", "/", {"x-user": "12345"}), never) == "gray"
    assert coloring.lane_for(RequestView("GET", "/", {"x-user": "123456"}), never) == ""
