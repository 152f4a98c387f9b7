"""Every rule document's envelope is checked, and errors name the field."""

import pytest

from tidegate.errors import RuleError
from tidegate.rules import document_key, load_documents, validate

GOOD = {"apiVersion": "tidegate.io/v1alpha1", "kind": "ServiceSettings", "metadata": {"name": "orders"}, "spec": {"service": "orders"}}


def test_yaml_multi_document_and_json_list() -> None:
    docs = load_documents("kind: A\n---\nkind: B\n")
    assert [d["kind"] for d in docs] == ["A", "B"]
    assert [d["kind"] for d in load_documents('[{"kind": "A"}, {"kind": "B"}]')] == ["A", "B"]


@pytest.mark.parametrize("text, message", [("a: [", "line"), ("", "no rule document"), ("- 1", "mapping"), (b"\xff", "UTF-8")])
def test_unparsable_text_is_refused_with_a_reason(text: str | bytes, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        load_documents(text)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("apiVersion"), "apiVersion"),
        (lambda d: d.update(kind=3), "kind"),
        (lambda d: d.update(metadata="x"), "metadata"),
        (lambda d: d["metadata"].update(name="Bad Name"), "metadata.name"),
        (lambda d: d["metadata"].update(namespace=""), "metadata.namespace"),
        (lambda d: d.update(spec=[1]), "spec"),
        (lambda d: d.update(kind="NoSuchKind"), "kind"),
        (lambda d: d["spec"].update(warmupCurve=-1), "spec.warmupCurve"),
        (lambda d: d["spec"].update(typo=1), "spec.typo"),
    ],
)
def test_invalid_envelope_names_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = {**GOOD, "metadata": dict(GOOD["metadata"]), "spec": dict(GOOD["spec"])}
    mutate(doc)
    with pytest.raises(RuleError) as error:
        validate(doc)
    assert error.value.field == field


def test_valid_document_parses_and_keys() -> None:
    assert validate(GOOD).service == "orders"
    assert document_key(GOOD) == ("default", "ServiceSettings", "orders")
