"""ServiceSettings' prewarm fields: validated at the edge, each refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.errors import RuleError
from tidegate.rules.document import validate


def _doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "ServiceSettings",
        "metadata": {"name": "s"},
        "spec": {"service": "orders", **spec},
    }


def test_prewarm_fields_are_accepted() -> None:
    validate(
        _doc(
            prewarmSqlAlchemy=False,
            prewarmRedis=True,
            prewarmHttp=True,
            prewarmServices="stock",
            warmupRequests="GET /catalog x20",
            registerDelaySeconds=2,
        )
    )


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"prewarmRedis": "yes"}, "spec.prewarmRedis", "must be true or false"),
        ({"warmupRequests": "GET catalog"}, "spec.warmupRequests", "is not 'METHOD /path xN'"),
        ({"prewarmServices": "a b"}, "spec.prewarmServices", "is not a service name"),
        ({"registerDelaySeconds": -1}, "spec.registerDelaySeconds", "non-negative"),
    ],
)
def test_bad_prewarm_fields_are_refused_by_name(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate(_doc(**spec))
    assert field in str(caught.value) and reason in str(caught.value)
