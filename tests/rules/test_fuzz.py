"""Property-based fuzzing of every rule parser: refused with RuleError or accepted, never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.rule_fuzz import documents, dump, raw_texts
from tidegate.errors import RuleError
from tidegate.rules import load_documents, validate
from tidegate.rules.lanes import compile_coloring, compile_lane_routing
from tidegate.rules.stability import IsolatingCompiler, reference_problems
from tidegate.rules.warmup import compile_warmup

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(document=documents())
def test_validate_refuses_with_rule_error_or_accepts(document: Any) -> None:
    try:
        validate(document)
    except RuleError as error:
        assert str(error)


@FUZZ
@given(text=st.one_of(raw_texts, documents().map(dump)), content_type=st.sampled_from(["", "application/json", "application/yaml"]))
def test_loading_text_refuses_with_rule_error_or_gives_documents(text: str, content_type: str) -> None:
    try:
        loaded = load_documents(text, content_type)
    except RuleError:
        return
    assert loaded and all(isinstance(document, dict) for document in loaded)


@FUZZ
@given(batch=st.lists(documents(), min_size=1, max_size=6))
def test_compiling_any_set_never_raises_and_keeps_the_valid_ones(batch: list[Any]) -> None:
    compiler = IsolatingCompiler("orders")
    rules, problems = compiler.compile(batch)
    assert all(isinstance(key, tuple) and isinstance(error, RuleError) for key, error in problems)
    again, _ = compiler.compile(batch)
    assert again == rules
    reference_problems(batch)
    compile_coloring(batch)
    compile_lane_routing(batch, batch)
    compile_warmup(batch)
