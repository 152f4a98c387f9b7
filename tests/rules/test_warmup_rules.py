"""Warm-up fields of ServiceSettings and their compilation into per-service WarmupSettings."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.core.warmup import WarmupSettings
from tidegate.errors import RuleError
from tidegate.rules import validate
from tidegate.rules.warmup import DEFAULT, compile_warmup


def settings_doc(spec: dict[str, Any], name: str = "orders") -> dict[str, Any]:
    return {"apiVersion": "tidegate.io/v1alpha1", "kind": "ServiceSettings", "metadata": {"name": name}, "spec": spec}


def test_all_warmup_fields_compile() -> None:
    spec = {
        "service": "orders",
        "warmupWindowSeconds": 60,
        "warmupCurve": 1,
        "warmupAggression": 1.5,
        "warmupMinWeightPercent": 5,
        "warmupStarvationThreshold": 0.7,
    }
    compiled, problems = compile_warmup([settings_doc(spec)])
    assert problems == []
    assert compiled == {"orders": WarmupSettings(60.0, 1.0, 1.5, 5.0, 0.7)}


def test_defaults_apply_to_unset_fields() -> None:
    compiled, _ = compile_warmup([settings_doc({"service": "orders"})])
    assert compiled["orders"] == DEFAULT == WarmupSettings(120.0, 2.0, None, None, 0.5)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("warmupAggression", 0, "above 0"),
        ("warmupAggression", "fast", "non-negative number"),
        ("warmupMinWeightPercent", 101, "at most 100"),
        ("warmupStarvationThreshold", 1.5, "at most 1"),
        ("warmupStarvationThreshold", -0.1, "non-negative"),
        ("warmupWindowSeconds", float("inf"), "finite"),
        ("warmupCurve", float("nan"), "finite"),
    ],
)
def test_invalid_warmup_fields_name_document_field_and_reason(field: str, value: Any, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate(settings_doc({"service": "orders", field: value}))
    assert caught.value.document == "ServiceSettings/orders"
    assert caught.value.field == f"spec.{field}"
    assert reason in caught.value.reason


def test_invalid_documents_are_left_out_and_reported() -> None:
    compiled, problems = compile_warmup(
        [settings_doc({"service": "orders", "warmupAggression": -1}, name="bad"), settings_doc({"service": "pay"}, name="pay")]
    )
    assert list(compiled) == ["pay"]
    assert problems[0].field == "spec.warmupAggression"


def test_first_document_for_a_service_wins() -> None:
    compiled, problems = compile_warmup(
        [
            settings_doc({"service": "orders", "warmupCurve": 3}, name="b"),
            settings_doc({"service": "orders", "warmupCurve": 1}, name="a"),
        ]
    )
    assert compiled["orders"].curve == 1.0
    assert problems[0].document == "ServiceSettings/b" and "ServiceSettings/a" in problems[0].reason
