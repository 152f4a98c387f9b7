"""RuleBook: documents applied by revision; a replay never rolls a rule back."""

from tidegate.core.rulebook import RuleBook, StoredRule


def rule(name: str, revision: int, kind: str = "ServiceSettings") -> StoredRule:
    return StoredRule("default", kind, name, revision, {"spec": {"rev": revision}})


def test_put_ignores_older_or_equal_revisions() -> None:
    book = RuleBook()
    assert book.put(rule("a", 3))
    assert not book.put(rule("a", 3))
    assert not book.put(rule("a", 2))
    assert book.get(("default", "ServiceSettings", "a")).revision == 3  # type: ignore[union-attr]


def test_remove_needs_a_newer_revision() -> None:
    book = RuleBook()
    book.put(rule("a", 3))
    assert not book.remove(("default", "ServiceSettings", "a"), 3)
    assert book.remove(("default", "ServiceSettings", "a"), 4)
    assert book.all() == ()


def test_replace_notifies_only_changed_kinds() -> None:
    book = RuleBook()
    heard: list[str] = []
    book.replace([rule("a", 1), rule("b", 2, kind="Other")])
    book.add_listener(heard.append)
    book.replace([rule("a", 1), rule("b", 5, kind="Other")])
    assert heard == ["Other"]
    assert [r.name for r in book.of_kind("ServiceSettings")] == ["a"]
