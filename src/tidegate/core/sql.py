"""SQL statements -> templates: the resource a statement is governed as (`sql:<template>`).

`normalize` turns a statement into its template: comments dropped; string,
number and bound-parameter literals (`'x'`, `42`, `%(id)s`, `%s`, `$1`, `?`,
`:name`) become `?`; `IN (?, ?, ...)` collapses to `IN (?)` and repeated
`VALUES (...), (...)` rows to one; keywords and unquoted names lower-cased
(quoted names keep their case); whitespace made canonical (one space between
tokens, none inside parentheses or before commas). Statements that differ only
in their values, layout or the driver's placeholder style share a template.

`template` is `normalize` behind a bounded LRU cache keyed by the statement
text (SQLAlchemy sends the same compiled text again and again), so the hot path
pays one dictionary lookup.
"""

from __future__ import annotations

import functools
import re

#: Statements whose templates are cached.
CACHE_SIZE = 4096

_TOKEN = re.compile(
    r"""
    (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
   |(?P<string>[eEbBxXnN]?'(?:[^']|'')*(?:'|\Z))
   |(?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)
   |(?P<qident>"(?:[^"]|"")*"|`[^`]*`)
   |(?P<param>%\([^)]*\)s|%s|\$\d+|\?|(?<![:\w]):[A-Za-z_]\w*)
   |(?P<number>(?<![\w.])(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
   |(?P<word>[A-Za-z_][\w$]*)
   |(?P<op><=|>=|<>|!=|::|\|\||->>|->)
   |(?P<space>\s+)
   |(?P<other>.)
    """,
    re.S | re.X,
)
_IN_LIST = re.compile(r"\bin \(\?(?:, \?)+\)")
_VALUES_ROWS = re.compile(r"\bvalues (\((?:\?|, )+\))(?:, \1)+")
_NO_SPACE_BEFORE = frozenset((",", ")", ".", ";"))
_NO_SPACE_AFTER = frozenset(("(", "."))


def normalize(statement: str) -> str:
    """The template of `statement` (see the module docstring)."""
    out: list[str] = []
    for match in _TOKEN.finditer(statement):
        kind = match.lastgroup
        if kind == "space" or kind == "comment":
            continue
        if kind in ("string", "dollar", "param", "number"):
            text = "?"
        elif kind == "word":
            text = match.group().lower()
        else:
            text = match.group()
        out.append(text)
    while out and out[-1] == ";":
        out.pop()
    parts: list[str] = []
    previous = ""
    for text in out:
        if parts and text not in _NO_SPACE_BEFORE and previous not in _NO_SPACE_AFTER:
            parts.append(" ")
        parts.append(text)
        previous = text
    joined = "".join(parts)
    joined = _IN_LIST.sub("in (?)", joined)
    return _VALUES_ROWS.sub(r"values \1", joined)


@functools.lru_cache(maxsize=CACHE_SIZE)
def template(statement: str) -> str:
    """`normalize(statement)`, cached by the statement's text (bounded LRU)."""
    return normalize(statement)
