"""The linear-time regex engine: the same answers as `re` where both apply, refusals named, bounds held."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.core import regex
from tidegate.core.regex import MAX_DFA_STATES, MAX_DFA_TRANSITIONS, MAX_INPUT_CHARS, RegexError

#: The Python versions whose `re._parser` trees the engine was checked against.
SUPPORTED = {(3, 11), (3, 12), (3, 13)}

ALPHABET = "abAB_ -\n1é"

_atoms = st.sampled_from(
    [
        "a",
        "b",
        "A",
        "_",
        " ",
        "-",
        "1",
        "é",
        r"\n",
        ".",
        r"\d",
        r"\w",
        r"\s",
        r"\W",
        r"\D",
        r"\S",
        "[ab]",
        "[^a]",
        "[a-c_]",
        "[^\\w]",
        "[A-Z1]",
    ]
)
_anchors = st.sampled_from(["^", "$", r"\A", r"\Z", r"\b", r"\B"])


def _patterns() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda p: f"({p})"),
            inner.map(lambda p: f"(?:{p})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "*?", "+?", "??", "{2}", "{0,2}", "{1,3}", "{2,}"])).map(
                lambda t: f"(?:{t[0]}){t[1]}"
            ),
            st.tuples(st.sampled_from(["i", "s", "m", "a", "im", "is"]), inner).map(lambda t: f"(?{t[0]}:{t[1]})"),
        )

    return st.recursive(st.one_of(_atoms, _anchors), extend, max_leaves=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=_patterns(), texts=st.lists(st.text(ALPHABET, max_size=12), min_size=1, max_size=6))
def test_answers_as_re_does(pattern: str, texts: list[str]) -> None:
    try:
        expected = re.compile(pattern)
    except re.error:
        with pytest.raises(RegexError):
            regex.compile(pattern)
        return
    compiled = regex.compile(pattern)
    for text in texts:
        assert compiled.fullmatch(text) == (expected.fullmatch(text) is not None), (pattern, text)
        assert compiled.search(text) == (expected.search(text) is not None), (pattern, text)


@pytest.mark.parametrize(
    ("pattern", "text", "full", "found"),
    [
        (r"1\d{4}", "12345", True, True),
        (r"1\d{4}", "123456", False, True),
        ("a$", "a\n", False, True),  # `$` before a final newline: only search sees it
        ("a$\n", "a\n", True, True),
        ("(?m)^b$", "a\nb\nc", False, True),
        (r"\bfoo\b", "a foo b", False, True),
        (r"\bfoo\b", "afoo b", False, False),
        ("(?i)gray|BLUE", "Blue", True, True),
        ("(?i)[a-c]+", "AbC", True, True),
        ("(?s)a.b", "a\nb", True, True),
        ("a.b", "a\nb", False, False),
        ("", "", True, True),
        ("x*", "yyy", False, True),
        (r"(?a)\w+", "héllo", False, True),
        (r"\w+", "héllo", True, True),
    ],
)
def test_examples(pattern: str, text: str, full: bool, found: bool) -> None:
    compiled = regex.compile(pattern)
    assert compiled.fullmatch(text) is full
    assert compiled.search(text) is found


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(a)\1", "backreference"),
        ("(?P<x>a)(?P=x)", "backreference"),
        ("(?=a)a", "lookahead"),
        ("(?!a)b", "negative lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "negative lookbehind"),
        ("(a)?(?(1)b|c)", "conditional"),
        ("(?>a+)b", "atomic group"),
        ("a++", "possessive"),
        ("a*+", "possessive"),
        ("a{99999999999}", "too large"),
        ("a{1001}", "at most 1000"),
        ("(?:a{1000}){1000}", "more than"),
        ("(" * 150 + ")" * 150, "deep"),
        ("a" * 1001, "at most 1000"),
        ("[", "unterminated character set"),
        ("a)", "unbalanced parenthesis"),
    ],
)
def test_refusals_name_the_construct(pattern: str, named: str) -> None:
    with pytest.raises(RegexError, match=re.escape(named)):
        regex.compile(pattern)


def test_pathological_patterns_cost_a_bounded_number_of_states() -> None:
    # `re` takes seconds on the first (exponential) and quadratic time on the second;
    # here each character after the first few is one cached transition.
    cases = [("(a+)+$", "a" * 26 + "!"), ("a+b", "a" * MAX_INPUT_CHARS), ("(a|aa)*c", "a" * 5000), ("(.*)*x", "y" * 4000)]
    for pattern, text in cases:
        compiled = regex.compile(pattern)
        assert compiled.fullmatch(text) is False
        assert compiled.search(text) is False
        for dfa in (compiled._full, compiled._search):
            assert len(dfa.states) <= 8, (pattern, len(dfa.states))
            assert dfa.transitions <= 16


def test_input_over_the_bound_never_matches() -> None:
    compiled = regex.compile("a*")
    assert compiled.fullmatch("a" * MAX_INPUT_CHARS)
    assert not compiled.fullmatch("a" * (MAX_INPUT_CHARS + 1))
    assert not compiled.search("a" * (MAX_INPUT_CHARS + 1))


def test_the_dfa_cache_is_bounded_and_answers_stay_right_after_a_reset() -> None:
    # Every distinct character is a new transition, and (?:.{0,40}x) makes many states.
    compiled = regex.compile(".{0,40}x.{0,40}")
    text = "".join(chr(0x4E00 + i) for i in range(3000)) + "x"
    for _ in range(3):
        assert compiled.search(text[-80:])
        assert not compiled.fullmatch(text[:-1])
        assert compiled.fullmatch(text[-41:])
    for dfa in (compiled._full, compiled._search):
        assert len(dfa.states) <= MAX_DFA_STATES and dfa.transitions <= MAX_DFA_TRANSITIONS


def test_a_non_string_pattern_is_refused() -> None:
    with pytest.raises(RegexError, match="string"):
        regex.compile(b"a")  # type: ignore[arg-type]


# What `re._parser.parse` makes of each construct the engine reads, on every supported
# version: a version that changes one of them fails here before a rule matches wrongly.
TREES = {
    "a": "[(LITERAL, 97)]",
    "[^a]": "[(NOT_LITERAL, 97)]",
    r"[^ab\d]": "[(IN, [(NEGATE, None), (LITERAL, 97), (LITERAL, 98), (CATEGORY, CATEGORY_DIGIT)])]",
    "[a-c]": "[(IN, [(RANGE, (97, 99))])]",
    ".": "[(ANY, None)]",
    "ab|cd": "[(BRANCH, (None, [[(LITERAL, 97), (LITERAL, 98)], [(LITERAL, 99), (LITERAL, 100)]]))]",
    "(a)": "[(SUBPATTERN, (1, 0, 0, [(LITERAL, 97)]))]",
    "(?i:a)": "[(SUBPATTERN, (None, 2, 0, [(LITERAL, 97)]))]",
    "a*": "[(MAX_REPEAT, (0, MAXREPEAT, [(LITERAL, 97)]))]",
    "a{2,3}?": "[(MIN_REPEAT, (2, 3, [(LITERAL, 97)]))]",
    r"^$\A\Z\b\B": "[(AT, AT_BEGINNING), (AT, AT_END), (AT, AT_BEGINNING_STRING), (AT, AT_END_STRING), (AT, AT_BOUNDARY), (AT, AT_NON_BOUNDARY)]",
    r"(a)\1": "[(SUBPATTERN, (1, 0, 0, [(LITERAL, 97)])), (GROUPREF, 1)]",
    "(?=a)": "[(ASSERT, (1, [(LITERAL, 97)]))]",
    "(?<!a)": "[(ASSERT_NOT, (-1, [(LITERAL, 97)]))]",
    "(?>a)": "[(ATOMIC_GROUP, [(LITERAL, 97)])]",
    "a++": "[(POSSESSIVE_REPEAT, (1, MAXREPEAT, [(LITERAL, 97)]))]",
}


@pytest.mark.skipif(sys.version_info[:2] not in SUPPORTED, reason="not a version the trees were checked on")
@pytest.mark.parametrize("pattern", sorted(TREES))
def test_the_standard_parser_makes_the_trees_the_engine_reads(pattern: str) -> None:
    parser = importlib.import_module("re._parser")
    assert str(list(parser.parse(pattern, 0))) == TREES[pattern]


def test_this_python_is_one_the_engine_was_checked_on() -> None:
    assert sys.version_info[:2] in SUPPORTED, (
        f"Python {sys.version_info[0]}.{sys.version_info[1]}: check tidegate.core.regex against its re._parser, "
        "then add it to SUPPORTED in tests/core/test_regex.py"
    )
    assert (3, 11) <= sys.version_info[:2]
