"""Linear-time regular expressions for the patterns rules carry (TrafficLane `regex:` matches).

Python's `re` backtracks: `(a+)+` against 26 characters holds the event loop
for seconds, and even `a+b` searched for in a long run of `a` is quadratic. A
pattern here is parsed by the standard library's own parser (`re._parser`,
the same syntax and errors as `re`, unchanged from Python 3.11 to 3.13; a test
pins the trees each supported version makes), compiled into a Thompson NFA
and run as a DFA built lazily, one state per set of NFA positions met in the
input, cached with a bound. Every character costs one dict lookup once its
transition is cached, at most one pass over the NFA before: time linear in the
input for any pattern, with no backtracking at all.

Only what a boolean `fullmatch` / `search` needs is supported: literals,
classes, `.`, alternation, groups (their captures are not kept), greedy and
lazy repetition, anchors `^ $ \\A \\Z \\b \\B`, and the flags `i m s x a`
(case-insensitive matching uses Python's simple case mapping, `str.lower`
and `str.upper`, per character). Constructs whose meaning needs backtracking
are refused with `RegexError` naming them: backreferences, lookahead and
lookbehind, conditionals, atomic groups and possessive quantifiers.

Bounds (the names below): a pattern of at most `MAX_PATTERN_CHARS` characters,
repetition counts up to `MAX_REPEAT`, an NFA of at most `MAX_NFA_NODES`
nodes once counted repetitions are unrolled, and input of at most
`MAX_INPUT_CHARS` characters (a longer value does not match). The DFA cache
holds at most `MAX_DFA_STATES` states and `MAX_DFA_TRANSITIONS` transitions
per pattern and mode; when full it is emptied and rebuilt as needed.

Pure: no I/O, no clock. Thread-safe: concurrent matchers may build the same
state twice, and either copy is correct.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

#: Longest pattern accepted, in characters.
MAX_PATTERN_CHARS = 1000
#: Largest count in `{m,n}` (RE2's bound).
MAX_REPEAT = 1000
#: Most NFA nodes a pattern compiles to, counted repetitions unrolled.
MAX_NFA_NODES = 10_000
#: Most group nesting levels.
MAX_NESTING = 100
#: Longest input matched; a longer value never matches.
MAX_INPUT_CHARS = 8192
#: DFA cache bounds, per compiled pattern and mode; the cache is emptied when one is reached.
MAX_DFA_STATES = 1000
MAX_DFA_TRANSITIONS = 20_000

# The standard library's parser and opcodes (private modules of `re`, stable in 3.11-3.13).
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

_IGNORECASE = 2
_LOCALE = 4
_MULTILINE = 8
_DOTALL = 16
_ASCII = 256

# NFA node kinds
_CHAR = 0
_SPLIT = 1
_ASSERT = 2
_MATCH = 3

# Assertions
_BEGIN = 0  # \A, and ^ without MULTILINE
_BOL = 1  # ^ with MULTILINE
_END = 2  # \Z
_EOL = 3  # $ with MULTILINE
_END_OR_FINAL_NL = 4  # $ without MULTILINE: at the end, or before a newline that ends the input
_WORD_BOUNDARY = 5
_NOT_WORD_BOUNDARY = 6
_WORD_BOUNDARY_ASCII = 7
_NOT_WORD_BOUNDARY_ASCII = 8

# What a DFA state knows of the character before it
_P_START = 1
_P_NEWLINE = 2
_P_WORD = 4
_P_WORD_ASCII = 8

Predicate = Callable[[str], bool]


class RegexError(ValueError):
    """A pattern that is not valid, or that this engine refuses; the message says which and why."""


def compile(pattern: str) -> Regex:
    """Compile `pattern`; raises RegexError for an invalid pattern or a refused construct."""
    return Regex(pattern)


class Regex:
    """A compiled pattern: `fullmatch(text)` and `search(text)` answer True or False."""

    __slots__ = ("pattern", "_nfa", "_full", "_search")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise RegexError(f"a pattern must be a string, got {type(pattern).__name__}")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise RegexError(f"is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS} are accepted")
        self.pattern = pattern
        self._nfa = _Nfa(pattern)
        self._full = _Dfa(self._nfa, search=False)
        self._search = _Dfa(self._nfa, search=True)

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of `text` matches (False for text over MAX_INPUT_CHARS)."""
        return self._full.run(text)

    def search(self, text: str) -> bool:
        """Whether some part of `text` matches (False for text over MAX_INPUT_CHARS)."""
        return self._search.run(text)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


# -- parse tree -> NFA -------------------------------------------------------------------------


def _refused(construct: str) -> RegexError:
    return RegexError(f"uses {construct}, which needs backtracking; tidegate matches in linear time and does not support it")


def _fold(ch: str) -> str:
    lower = ch.lower()
    return lower if len(lower) == 1 else ch


def _variants(ch: str) -> frozenset[str]:
    """The single characters `ch` matches case-insensitively (simple case mapping)."""
    found = {ch}
    for other in (ch.lower(), ch.upper(), ch.casefold(), ch.title()):
        if len(other) == 1:
            found.add(other)
    return frozenset(found)


def _never(ch: str) -> bool:
    return False


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _is_word_ascii(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


_ASCII_SPACE = frozenset(" \t\n\r\f\v")


def _category(name: str, ascii_only: bool) -> Predicate:
    if name == "CATEGORY_DIGIT":
        return (lambda ch: "0" <= ch <= "9") if ascii_only else str.isdecimal
    if name == "CATEGORY_NOT_DIGIT":
        return (lambda ch: not "0" <= ch <= "9") if ascii_only else (lambda ch: not ch.isdecimal())
    if name == "CATEGORY_SPACE":
        return (lambda ch: ch in _ASCII_SPACE) if ascii_only else str.isspace
    if name == "CATEGORY_NOT_SPACE":
        return (lambda ch: ch not in _ASCII_SPACE) if ascii_only else (lambda ch: not ch.isspace())
    if name == "CATEGORY_WORD":
        return _is_word_ascii if ascii_only else _is_word
    if name == "CATEGORY_NOT_WORD":
        return (lambda ch: not _is_word_ascii(ch)) if ascii_only else (lambda ch: not _is_word(ch))
    raise RegexError(f"uses the character category {name}, which is not supported")


class _Nfa:
    """The Thompson NFA of a pattern: parallel lists indexed by node id."""

    def __init__(self, pattern: str) -> None:
        self.kind: list[int] = []
        self.out: list[int] = []
        self.out2: list[int] = []
        self.pred: list[Predicate] = []
        self.assertion: list[int] = []
        self.final_sensitive = False  # a `$` without MULTILINE: the last character is looked at apart
        self.uses_context = False  # some anchor reads the previous character
        try:
            tree = _parser.parse(pattern, 0)
        except RecursionError:
            raise RegexError("nests groups too deeply") from None
        except OverflowError as error:
            raise RegexError(f"{error} (at most {MAX_REPEAT})") from None
        except Exception as error:  # re.error, with the position it names
            raise RegexError(f"is not a valid regular expression: {error}") from None
        flags = int(tree.state.flags)
        if flags & _LOCALE:
            raise RegexError("uses the LOCALE flag, which is not supported")
        match = self._node(_MATCH)
        self.start = self._sequence(list(tree), match, flags, 0)

    def _node(self, kind: int, out: int = -1, out2: int = -1, pred: Predicate = _never, assertion: int = -1) -> int:
        if len(self.kind) >= MAX_NFA_NODES:
            raise RegexError(f"compiles to more than {MAX_NFA_NODES} states (counted repetitions multiply); make it smaller")
        self.kind.append(kind)
        self.out.append(out)
        self.out2.append(out2)
        self.pred.append(pred)
        self.assertion.append(assertion)
        return len(self.kind) - 1

    def _sequence(self, items: list[tuple[Any, Any]], following: int, flags: int, depth: int) -> int:
        if depth > MAX_NESTING:
            raise RegexError(f"nests groups more than {MAX_NESTING} deep")
        for op, av in reversed(items):
            following = self._item(op, av, following, flags, depth)
        return following

    def _item(self, op: Any, av: Any, following: int, flags: int, depth: int) -> int:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            return self._node(_CHAR, following, pred=self._predicate(name, av, flags))
        if name == "BRANCH":
            alternatives = [self._sequence(list(branch), following, flags, depth + 1) for branch in av[1]]
            start = alternatives[-1]
            for alternative in reversed(alternatives[:-1]):
                start = self._node(_SPLIT, alternative, start)
            return start
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, items = av
            return self._sequence(list(items), following, (flags | add_flags) & ~del_flags, depth + 1)
        if name in ("MAX_REPEAT", "MIN_REPEAT"):  # lazy or greedy: the same for a yes/no answer
            low, high, items = av
            unbounded = high is _c.MAXREPEAT
            if low > MAX_REPEAT or (not unbounded and high > MAX_REPEAT):
                raise RegexError(f"repeats {high if not unbounded else low} times; at most {MAX_REPEAT} are accepted")
            body = list(items)
            start = following
            if unbounded:
                loop = self._node(_SPLIT, -1, following)
                self.out[loop] = self._sequence(body, loop, flags, depth + 1)
                start = loop
            else:
                for _ in range(high - low):  # x{0,k} as (x(x(...)?)?)?: linear in k
                    start = self._node(_SPLIT, self._sequence(body, start, flags, depth + 1), following)
            for _ in range(low):
                start = self._sequence(body, start, flags, depth + 1)
            return start
        if name == "AT":
            self.uses_context = True
            return self._node(_ASSERT, following, assertion=self._anchor(str(av), flags))
        if name == "GROUPREF":
            raise _refused(f"a backreference (\\{av})")
        if name == "GROUPREF_EXISTS":
            raise _refused("a conditional group (?(...)...)")
        if name == "ASSERT":
            raise _refused("a lookahead (?=...)" if av[0] == 1 else "a lookbehind (?<=...)")
        if name == "ASSERT_NOT":
            raise _refused("a negative lookahead (?!...)" if av[0] == 1 else "a negative lookbehind (?<!...)")
        if name == "ATOMIC_GROUP":
            raise _refused("an atomic group (?>...)")
        if name == "POSSESSIVE_REPEAT":
            raise _refused("a possessive quantifier (*+, ++, ?+ or {m,n}+)")
        raise RegexError(f"uses {name}, which this engine does not know")

    def _anchor(self, name: str, flags: int) -> int:
        multiline = bool(flags & _MULTILINE)
        if name == "AT_BEGINNING":
            return _BOL if multiline else _BEGIN
        if name == "AT_BEGINNING_STRING":
            return _BEGIN
        if name == "AT_END":
            if multiline:
                return _EOL
            self.final_sensitive = True
            return _END_OR_FINAL_NL
        if name == "AT_END_STRING":
            return _END
        ascii_only = bool(flags & _ASCII)
        if name == "AT_BOUNDARY":
            return _WORD_BOUNDARY_ASCII if ascii_only else _WORD_BOUNDARY
        if name == "AT_NON_BOUNDARY":
            return _NOT_WORD_BOUNDARY_ASCII if ascii_only else _NOT_WORD_BOUNDARY
        raise RegexError(f"uses the anchor {name}, which is not supported")

    @staticmethod
    def _predicate(name: str, av: Any, flags: int) -> Predicate:
        ignore_case = bool(flags & _IGNORECASE)
        if name == "ANY":
            return (lambda ch: True) if flags & _DOTALL else (lambda ch: ch != "\n")
        if name in ("LITERAL", "NOT_LITERAL"):
            literal = chr(av)
            if ignore_case:
                folded = _fold(literal)
                variants = _variants(literal)
                if name == "LITERAL":
                    return lambda ch: ch in variants or _fold(ch) == folded
                return lambda ch: not (ch in variants or _fold(ch) == folded)
            return (lambda ch: ch == literal) if name == "LITERAL" else (lambda ch: ch != literal)
        return _class_predicate(av, ignore_case, bool(flags & _ASCII))


def _class_predicate(items: Iterable[tuple[Any, Any]], ignore_case: bool, ascii_only: bool) -> Predicate:
    """A `[...]` class: literals, ranges, categories, maybe negated."""
    negate = False
    literals: set[str] = set()
    ranges: list[tuple[int, int]] = []
    categories: list[Predicate] = []
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            literals.add(chr(av))
        elif name == "RANGE":
            ranges.append((int(av[0]), int(av[1])))
        elif name == "CATEGORY":
            categories.append(_category(str(av), ascii_only))
        else:
            raise RegexError(f"uses {name} in a character class, which this engine does not know")
    if ignore_case:
        literals = {variant for literal in literals for variant in _variants(literal)}
    frozen = frozenset(literals)
    bounds = tuple(ranges)
    tests = tuple(categories)

    def member(ch: str) -> bool:
        if ch in frozen:
            return True
        code = ord(ch)
        for low, high in bounds:
            if low <= code <= high:
                return True
        for test in tests:
            if test(ch):
                return True
        return False

    def case_member(ch: str) -> bool:
        return any(member(variant) for variant in _variants(ch))

    test = case_member if ignore_case else member
    return (lambda ch: not test(ch)) if negate else test


# -- the lazy DFA ------------------------------------------------------------------------------


class _State:
    """A set of NFA positions (before their epsilon closure) and what the previous character was."""

    __slots__ = ("kernel", "prev", "next", "stop", "last", "at_end", "terminal", "accepts")

    def __init__(self, kernel: frozenset[int], prev: int, terminal: bool = False, accepts: bool = False) -> None:
        self.kernel = kernel
        self.prev = prev
        self.next: dict[str, _State] = {}  # on a character that is not the input's last
        self.stop: dict[str, bool] = {}  # ... when that character decides the answer
        self.last: dict[str, _State] = {}  # on the input's last character (a `$` looks past it)
        self.at_end: bool | None = None
        self.terminal = terminal  # the answer is known: `accepts`
        self.accepts = accepts


def _context(ch: str) -> int:
    return (_P_NEWLINE if ch == "\n" else 0) | (_P_WORD if _is_word(ch) else 0) | (_P_WORD_ASCII if _is_word_ascii(ch) else 0)


def _holds(assertion: int, prev: int, nxt: str | None, last: bool) -> bool:
    """Whether a zero-width assertion holds between the previous character's context and `nxt` (None: the end)."""
    if assertion == _BEGIN:
        return bool(prev & _P_START)
    if assertion == _BOL:
        return bool(prev & (_P_START | _P_NEWLINE))
    if assertion == _END:
        return nxt is None
    if assertion == _EOL:
        return nxt is None or nxt == "\n"
    if assertion == _END_OR_FINAL_NL:
        return nxt is None or (nxt == "\n" and last)
    if prev & _P_START and nxt is None and assertion in (_NOT_WORD_BOUNDARY, _NOT_WORD_BOUNDARY_ASCII):
        return False  # as `re` before Python 3.14: \B never matches the empty string
    if assertion in (_WORD_BOUNDARY, _NOT_WORD_BOUNDARY):
        before = bool(prev & _P_WORD)
        after = nxt is not None and _is_word(nxt)
        return (before != after) == (assertion == _WORD_BOUNDARY)
    before = bool(prev & _P_WORD_ASCII)
    after = nxt is not None and _is_word_ascii(nxt)
    return (before != after) == (assertion == _WORD_BOUNDARY_ASCII)


class _Dfa:
    """The NFA run as a DFA built on demand, in one mode (whole-input match, or search)."""

    def __init__(self, nfa: _Nfa, search: bool) -> None:
        self.nfa = nfa
        self.searching = search
        self.dead = _State(frozenset(), 0, terminal=True, accepts=False)
        self.matched = _State(frozenset(), 0, terminal=True, accepts=True)
        self._reset()

    def _reset(self) -> None:
        self.states: dict[tuple[frozenset[int], int], _State] = {}
        self.transitions = 0
        self.start = self._state(frozenset((self.nfa.start,)), _P_START)

    def _state(self, kernel: frozenset[int], prev: int) -> _State:
        if not kernel:
            return self.dead
        key = (kernel, prev)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _State(kernel, prev)
        return state

    def run(self, text: str) -> bool:
        if len(text) > MAX_INPUT_CHARS:
            return False
        state = self.start
        if not text:
            return self._accepts_at_end(state)
        final_sensitive = self.nfa.final_sensitive
        for ch in text[:-1] if final_sensitive else text:
            # The hot path is this one lookup: transitions to a known answer are kept apart.
            following = state.next.get(ch)
            if following is None:
                answer = state.stop.get(ch)
                if answer is not None:
                    return answer
                following = self._advance(state, ch, False)
                if following.terminal:
                    return following.accepts
            state = following
        if final_sensitive:
            following = self._advance(state, text[-1], True)
            if following.terminal:
                return following.accepts
            state = following
        return self._accepts_at_end(state)

    def _accepts_at_end(self, state: _State) -> bool:
        if state.terminal:
            return state.accepts
        if state.at_end is None:
            _chars, matched = self._closure(state.kernel, state.prev, None, False)
            state.at_end = matched
        return state.at_end

    def _closure(self, kernel: Iterable[int], prev: int, nxt: str | None, last: bool) -> tuple[list[int], bool]:
        """The character nodes reachable from `kernel` without consuming input, and whether MATCH is."""
        nfa = self.nfa
        kinds, outs, outs2, assertions = nfa.kind, nfa.out, nfa.out2, nfa.assertion
        seen: set[int] = set()
        stack = list(kernel)
        chars: list[int] = []
        matched = False
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            kind = kinds[node]
            if kind == _CHAR:
                chars.append(node)
            elif kind == _SPLIT:
                stack.append(outs2[node])
                stack.append(outs[node])
            elif kind == _ASSERT:
                if _holds(assertions[node], prev, nxt, last):
                    stack.append(outs[node])
            else:
                matched = True
        return chars, matched

    def _advance(self, state: _State, ch: str, last: bool) -> _State:
        """The state after `ch` (`last`: it ends the input), cached on `state`."""
        cached = state.last.get(ch) if last else None
        if cached is not None:
            return cached
        chars, matched = self._closure(state.kernel, state.prev, ch, last)
        if matched and self.searching:
            following = self.matched  # a match ends before `ch`: search is done
        else:
            nfa = self.nfa
            preds, outs = nfa.pred, nfa.out
            kernel = {outs[node] for node in chars if preds[node](ch)}
            if self.searching:
                kernel.add(nfa.start)  # a match may also begin after `ch`
            if self.transitions >= MAX_DFA_TRANSITIONS or len(self.states) >= MAX_DFA_STATES:
                self._reset()  # bounded memory: start the cache again (states in use stay valid)
            following = self._state(frozenset(kernel), _context(ch) if nfa.uses_context else 0)
        if last:
            state.last[ch] = following
        elif following.terminal:
            state.stop[ch] = following.accepts
        else:
            state.next[ch] = following
        self.transitions += 1
        return following
