"""Reading rule text within bounds: duplicate keys, depth, alias expansion, values, quantities."""

from __future__ import annotations

import pytest

from tidegate.errors import RuleError
from tidegate.rules import limits, load_documents, validate


def test_a_key_twice_in_one_mapping_is_refused_in_yaml_and_json() -> None:
    with pytest.raises(RuleError, match="'threshold' twice"):
        load_documents("kind: X\nspec:\n  threshold: 1\n  threshold: 2\n")
    with pytest.raises(RuleError, match="'threshold' appears twice"):
        load_documents('{"kind": "X", "spec": {"threshold": 1, "threshold": 2}}')


def test_yaml_merge_keys_are_not_duplicates() -> None:
    [document] = load_documents("base: &b {a: 1}\nspec:\n  <<: *b\n  a: 2\n")
    assert document["spec"] == {"a": 2}


def test_aliases_count_what_they_expand_to_in_depth_and_size() -> None:
    nested = "a: &a " + "[" * 20 + "1" + "]" * 20 + "\nb: " + "[" * 13 + "*a" + "]" * 13 + "\n"
    with pytest.raises(RuleError, match=f"more than {limits.MAX_DEPTH} deep"):
        load_documents(nested)
    load_documents(nested.replace("[" * 13 + "*a" + "]" * 13, "[" * 10 + "*a" + "]" * 10))
    bomb = (
        "a: &a ["
        + ", ".join(["x"] * 100)
        + "]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(100))}]\n" for i in range(3))
    )
    with pytest.raises(RuleError, match="aliases expanded"):
        load_documents(bomb)


@pytest.mark.parametrize(
    ("spec", "field", "needle"),
    [
        ({"threshold": 10**400}, "spec.threshold", "out of range"),
        ({"threshold": float("inf")}, "spec.threshold", "finite"),
        ({"threshold": 2e9}, "spec.threshold", "at most 1e+09"),
        ({"threshold": 1, "statDurationSeconds": 10**20}, "spec.statDurationSeconds", "out of range"),
        ({"threshold": 1, "statDuration": "9999999999999d"}, "spec.statDuration", "days"),
        ({"threshold": 1, "warmUpPeriod": 1e-320}, "spec.warmUpPeriod", "µs"),
    ],
)
def test_quantities_out_of_range_are_refused_naming_the_field(spec: dict, field: str, needle: str) -> None:
    document = {"apiVersion": "fault-tolerance.opensergo.io/v1alpha1", "kind": "RateLimitStrategy", "metadata": {"name": "r"}, "spec": spec}
    with pytest.raises(RuleError) as refused:
        validate(document)
    assert refused.value.field == field and needle in refused.value.reason, refused.value


def test_a_throttling_interval_too_small_to_pace_is_refused() -> None:
    document = {
        "apiVersion": "fault-tolerance.opensergo.io/v1alpha1",
        "kind": "ThrottlingStrategy",
        "metadata": {"name": "t"},
        "spec": {"minIntervalOfRequests": 1e-320, "queueTimeout": "1s"},
    }
    with pytest.raises(RuleError) as refused:
        validate(document)
    assert refused.value.field == "spec.minIntervalOfRequests"
