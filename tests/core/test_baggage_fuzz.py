"""Hypothesis fuzz of the baggage lane member: never raises, never disturbs others.

Other members are any text a header can carry (printable ASCII and tab, commas excepted);
members holding anything else, and empty ones, are dropped (`sendable`) and checked apart."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.core.baggage import MAX_BYTES, MAX_MEMBERS, get_lane, parse, read_lane, sendable, set_lane, with_lane

LANE = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=63)
TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-", min_size=1, max_size=12)
VALUE = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\'), max_size=12)
OWS = st.sampled_from(["", " ", "\t", "  "])
HEADER_TEXT = st.text(alphabet="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != ",") + "\t", max_size=20)
UNSENDABLE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=","), min_size=1, max_size=6).filter(
    lambda t: any(not (c == "\t" or " " <= c <= "~") for c in t)
)


@st.composite
def foreign_member(draw: st.DrawFn) -> str:
    """A member that is not ours: well-formed (with properties) or arbitrary comma-free junk."""
    if draw(st.booleans()):
        key = draw(TOKEN.filter(lambda k: k != "tidegate.lane"))
        props = draw(st.lists(st.tuples(TOKEN, st.one_of(st.none(), VALUE)), max_size=2))
        text = f"{key}{draw(OWS)}={draw(OWS)}{draw(VALUE)}"
        for name, value in props:
            text += f"{draw(OWS)};{draw(OWS)}{name}" + (f"={value}" if value is not None else "")
        return text
    return draw(HEADER_TEXT.filter(lambda t: t.strip(" \t") != "" and not t.strip(" \t").startswith("tidegate.lane")))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=70))
def test_never_raises_on_arbitrary_text(header: str, lane: str) -> None:
    get_lane(header)
    read_lane(header)
    parse(header)
    assert isinstance(with_lane(header, lane), str)
    set_lane(header, "")


@settings(max_examples=300, deadline=None)
@given(st.lists(foreign_member(), max_size=8), LANE)
def test_set_then_read_returns_the_lane(members: list[str], lane: str) -> None:
    header = ",".join(members)
    assert get_lane(with_lane(header, lane)) == lane


@settings(max_examples=300, deadline=None)
@given(st.lists(foreign_member(), max_size=8), LANE, LANE, st.integers(min_value=0, max_value=8))
def test_untouched_members_round_trip_exactly(members: list[str], old: str, new: str, at: int) -> None:
    others = [m.strip(" \t") for m in members if m.strip(" \t")]
    with_ours = [*members[:at], f"tidegate.lane={old}", *members[at:]]
    edited = with_lane(",".join(with_ours), new)
    assert [m.raw for m in parse(edited) if m.key != "tidegate.lane" or m.problem] == others
    assert get_lane(edited) == new
    assert edited == ",".join([*members[:at], f"tidegate.lane={new}", *members[at:]])


@settings(max_examples=300, deadline=None)
@given(st.lists(foreign_member(), max_size=8), LANE, st.integers(min_value=0, max_value=8))
def test_removing_leaves_the_others(members: list[str], lane: str, at: int) -> None:
    header = ",".join([*members[:at], f"tidegate.lane={lane}", *members[at:]])
    removed = with_lane(header, "")
    assert get_lane(removed) == ""
    assert [m.raw for m in parse(removed)] == [m.strip(" \t") for m in members if m.strip(" \t")]
    assert removed == ",".join(members)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(foreign_member(), st.one_of(st.none(), UNSENDABLE)), max_size=8), st.one_of(st.just(""), LANE))
def test_unsendable_and_empty_members_are_dropped_and_the_rest_kept(members: list[tuple[str, str | None]], lane: str) -> None:
    header = ",".join(member if bad is None else member + bad for member, bad in members) + ",,"
    edited = with_lane(header, lane)
    assert edited.isascii() and "\r" not in edited and "\n" not in edited
    kept = [member.strip(" \t") for member, bad in members if bad is None]
    assert [m.raw for m in parse(edited) if m.key != "tidegate.lane" or m.problem] == kept
    assert get_lane(edited) == lane
    assert sendable(edited).header == edited


@settings(max_examples=100, deadline=None)
@given(st.lists(foreign_member(), min_size=1, max_size=8), st.integers(min_value=0, max_value=400), LANE)
def test_the_lane_always_fits_and_only_members_from_the_end_go(members: list[str], copies: int, lane: str) -> None:
    others = (members * (copies // len(members) + 1))[: copies + 1]
    edit = set_lane(",".join(others), lane)
    assert get_lane(edit.header) == lane
    kept = [m.raw for m in parse(edit.header) if m.key != "tidegate.lane" or m.problem]
    assert kept == [m.strip(" \t") for m in others][: len(kept)]
    assert len(kept) + 1 <= MAX_MEMBERS and len(edit.header) <= MAX_BYTES
    assert bool(edit.problem) == (len(kept) < len(others))
