"""The regex engine TrafficLane matches use (tidegate.core.regex), against Python's `re` and RE2.

Anchors, in the same run: Python's `re` (backtracking: fast on ordinary input,
exponential or quadratic on some patterns) and Google's RE2 binding
(`google-re2`, linear time; measured when installed: `pip install google-re2`).

Cases:
  short header    `1\\d{4}` whole-matched against "12345" (an x-user-id)
  long header     a 4 KB Cookie header searched for `beta=1` as a whole-value regex
  nested          `(a+)+$` whole-matched against n × "a" + "!" (re: exponential in n)
  a+b             `a+b` searched for in 8192 × "a" (re: quadratic)

    .venv/bin/python bench/regex.py

Last line: JSON, µs per match for the header cases and ms for the pathological ones.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from tidegate.core import regex

try:
    import re2  # type: ignore[import-not-found]
except ImportError:  # the bench runs without it, printing no RE2 figures
    re2 = None

ROUNDS = 5


def per_call_us(fn: Callable[[], object], loops: int) -> float:
    """Best of ROUNDS, µs per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / loops * 1e6


def once_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def engines(pattern: str) -> dict[str, Any]:
    found: dict[str, Any] = {"tidegate": regex.compile(pattern), "re": re.compile(pattern)}
    if re2 is not None:
        found["re2"] = re2.compile(pattern)
    return found


def header_case(name: str, pattern: str, text: str, loops: int) -> dict[str, float]:
    figures = {}
    for engine, compiled in engines(pattern).items():
        answer = bool(compiled.fullmatch(text))
        figures[engine] = round(per_call_us(lambda compiled=compiled: compiled.fullmatch(text), loops), 3)
        print(f"  {name:<13} {engine:<9} {figures[engine]:>9.3f} µs  (match: {answer})")
    return figures


def main() -> None:
    print(f"regex engines: tidegate.core.regex, re, {'re2 (google-re2)' if re2 is not None else 're2 not installed'}")
    result: dict[str, Any] = {}
    result["short_header_us"] = header_case("short header", r"1\d{4}", "12345", 50_000)
    cookie = "; ".join(f"c{i}=" + "x" * 30 for i in range(120)) + "; beta=1"
    result["long_header_us"] = header_case(f"long ({len(cookie)} B)", r".*(^|; )beta=1(;.*|$)", cookie, 200)

    nested: dict[str, dict[str, float]] = {"tidegate": {}, "re": {}}
    compiled = regex.compile("(a+)+$")
    for n in (16, 18, 20, 22, 26, 8000):
        text = "a" * n + "!"
        nested["tidegate"][str(n)] = round(once_ms(lambda text=text: compiled.fullmatch(text)), 3)
        if n <= 22:  # re doubles with each extra character: 26 would take tens of seconds
            nested["re"][str(n)] = round(once_ms(lambda text=text: re.fullmatch("(a+)+$", text)), 3)
    if re2 is not None:
        nested["re2"] = {"8000": round(once_ms(lambda: re2.fullmatch("(a+)+$", "a" * 8000 + "!")), 3)}
    for engine, figures in nested.items():
        print(f"  (a+)+$        {engine:<9} " + ", ".join(f"n={n}: {ms} ms" for n, ms in figures.items()))
    result["nested_quantifier_ms"] = nested

    long_run = "a" * regex.MAX_INPUT_CHARS
    a_plus_b = {
        "tidegate": round(once_ms(lambda: regex.compile("a+b").search(long_run)), 3),
        "re": round(once_ms(lambda: re.search("a+b", long_run)), 3),
    }
    if re2 is not None:
        a_plus_b["re2"] = round(once_ms(lambda: re2.search("a+b", long_run)), 3)
    print("  a+b search    " + ", ".join(f"{engine}: {ms} ms" for engine, ms in a_plus_b.items()) + f"  ({len(long_run)} × 'a')")
    result["a_plus_b_search_ms"] = a_plus_b
    print(json.dumps(result))


if __name__ == "__main__":
    main()
