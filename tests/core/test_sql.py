"""core/sql.py: statements that differ only in values, layout or placeholder style share one template."""

from __future__ import annotations

import pytest

from tidegate.core import sql


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM t WHERE id = 42", "select * from t where id = ?"),
        ("select *\n  from T\twhere ID=7;", "select * from t where id = ?"),
        ("SELECT name FROM u WHERE name = 'O''Brien'", "select name from u where name = ?"),
        ("SELECT 1.5e3, .5, 10 FROM t", "select ?, ?, ? from t"),
        ("select a from t -- trailing comment\nwhere b = 1", "select a from t where b = ?"),
        ("select /* hint */ a from t where b = 1", "select a from t where b = ?"),
        ("SELECT a FROM t WHERE id IN (1, 2, 3)", "select a from t where id in (?)"),
        ("SELECT a FROM t WHERE id IN (%(id_1)s, %(id_2)s)", "select a from t where id in (?)"),
        ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')", "insert into t (a, b) values (?, ?)"),
        ('SELECT "MixedCase" FROM "Tab" WHERE x = $1', 'select "MixedCase" from "Tab" where x = ?'),
        ("select x::int from t where y >= :p", "select x :: int from t where y >= ?"),
        ("SELECT $$dollar 'quoted'$$, col2 FROM t", "select ?, col2 from t"),
        ("UPDATE t SET a = ? WHERE b = %s", "update t set a = ? where b = ?"),
    ],
)
def test_normalize(statement: str, expected: str) -> None:
    assert sql.normalize(statement) == expected


def test_placeholder_styles_share_a_template() -> None:
    styles = [
        "SELECT * FROM orders WHERE id = %(id)s AND state = %(state)s",
        "SELECT * FROM orders WHERE id = $1 AND state = $2",
        "SELECT * FROM orders WHERE id = ? AND state = ?",
        "SELECT * FROM orders WHERE id = :id AND state = :state",
        "select * from orders where id = 5 and state = 'paid'",
    ]
    assert len({sql.normalize(s) for s in styles}) == 1


def test_names_with_digits_and_literals_inside_names_stay() -> None:
    assert sql.normalize("SELECT col1, t2.x3 FROM t2") == "select col1, t2.x3 from t2"


def test_unterminated_literal_and_comment_do_not_raise() -> None:
    assert sql.normalize("select 'unterminated") == "select ?"
    assert sql.normalize("select a /* open") == "select a"


def test_template_is_cached_and_bounded() -> None:
    sql.template.cache_clear()
    statement = "SELECT a FROM cached WHERE b = 1"
    assert sql.template(statement) == sql.normalize(statement)
    sql.template(statement)
    info = sql.template.cache_info()
    assert info.hits == 1 and info.misses == 1
    assert info.maxsize == sql.CACHE_SIZE
