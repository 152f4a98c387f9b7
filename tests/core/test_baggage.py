"""The lane member of W3C baggage: read, set, replace, remove; other members untouched."""

from __future__ import annotations

import pytest

from tidegate.core.baggage import (
    LANE_KEY,
    MAX_BYTES,
    MAX_MEMBERS,
    get_lane,
    join_headers,
    parse,
    read_lane,
    sendable,
    set_lane,
    with_lane,
)


def test_reads_the_lane_among_other_members() -> None:
    assert get_lane("userId=alice, tidegate.lane=gray;ttl=60, serverNode=DF%2028") == "gray"


def test_no_lane_reads_empty() -> None:
    assert get_lane("") == ""
    assert get_lane("userId=alice") == ""
    assert get_lane("tidegate.lane2=gray") == ""


def test_lane_value_is_percent_decoded() -> None:
    assert get_lane("tidegate.lane=%67ray") == "gray"


def test_whitespace_around_equals_is_allowed() -> None:
    assert get_lane("a=1 ,\ttidegate.lane = gray ") == "gray"


def test_invalid_lane_is_ignored_with_a_reason() -> None:
    reading = read_lane("tidegate.lane=gr%20ay")
    assert reading.lane == ""
    assert "not 1-63" in reading.problem
    assert read_lane("tidegate.lane=" + "a" * 64).lane == ""


def test_malformed_member_with_our_key_is_ignored_with_a_reason() -> None:
    reading = read_lane('tidegate.lane="gray"')
    assert reading.lane == ""
    assert "malformed" in reading.problem


def test_first_member_with_the_key_decides() -> None:
    assert get_lane("tidegate.lane=blue,tidegate.lane=gray") == "blue"


def test_other_key_is_supported() -> None:
    assert get_lane("x-opensergo-traffic=gray", key="x-opensergo-traffic") == "gray"


def test_appends_our_member_keeping_others_byte_for_byte() -> None:
    header = "userId=al%20ice;p1;p2=v ,  serverNode=DF"
    assert with_lane(header, "gray") == header + ",tidegate.lane=gray"


def test_sets_on_empty_header() -> None:
    assert with_lane("", "gray") == "tidegate.lane=gray"
    assert with_lane("  ", "gray") == "tidegate.lane=gray"


def test_replaces_in_place_keeping_order_spacing_and_properties_of_others() -> None:
    assert with_lane("a=1 ,  tidegate.lane=blue , b=2;x", "gray") == "a=1 ,  tidegate.lane=gray , b=2;x"
    # ";  b=2" here is a property of our member, so it goes with it
    assert with_lane("a=1 ,  tidegate.lane=blue ;  b=2", "gray") == "a=1 ,  tidegate.lane=gray"


def test_replacing_drops_our_properties_and_duplicates() -> None:
    assert with_lane("tidegate.lane=blue;ttl=1,a=1,tidegate.lane=red", "gray") == "tidegate.lane=gray,a=1"


def test_removes_our_member_only() -> None:
    assert with_lane("a=1, tidegate.lane=blue, b=2", "") == "a=1, b=2"
    assert with_lane("tidegate.lane=blue", "") == ""
    assert with_lane("a=1", "") == "a=1"


def test_malformed_members_pass_through_untouched() -> None:
    header = 'a="quoted", =novalue, ;;, b=2'
    assert with_lane(header, "gray") == header + ",tidegate.lane=gray"
    members = parse(header)
    assert [m.raw for m in members] == ['a="quoted"', "=novalue", ";;", "b=2"]
    assert [bool(m.problem) for m in members] == [True, True, True, False]


def test_setting_an_invalid_lane_leaves_ours_out_with_a_reason() -> None:
    edit = set_lane("a=1,tidegate.lane=blue", "no spaces")
    assert edit.header == "a=1"
    assert "not propagated" in edit.problem


def test_trailing_comma_does_not_double() -> None:
    assert with_lane("a=1,", "gray") == "a=1,tidegate.lane=gray"


def test_multiple_headers_join_with_commas() -> None:
    joined = join_headers(["a=1", "", "tidegate.lane=gray"])
    assert joined == "a=1,tidegate.lane=gray"
    assert get_lane(joined) == "gray"


def test_at_the_byte_limit_the_lane_wins_and_members_go_from_the_end() -> None:
    first = "k=" + "v" * 4000
    last = "z=" + "v" * (MAX_BYTES - len(first) - 10)
    edit = set_lane(f"{first},{last}", "gray")
    assert edit.header == f"{first},tidegate.lane=gray"
    assert "8192" in edit.problem and "'z'" in edit.problem
    fits = "k=" + "v" * (MAX_BYTES - len("k=") - len(",tidegate.lane=gray"))
    assert set_lane(fits, "gray") == type(edit)(fits + ",tidegate.lane=gray", "")


def test_at_the_member_limit_the_lane_wins_and_the_last_member_goes() -> None:
    full = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS))
    edit = set_lane(full, "gray")
    almost = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS - 1))
    assert edit.header == almost + ",tidegate.lane=gray"
    assert f"'k{MAX_MEMBERS - 1}'" in edit.problem
    assert with_lane(almost, "gray") == almost + ",tidegate.lane=gray"


def test_a_lane_already_in_a_full_header_keeps_its_place() -> None:
    full = ",".join(["tidegate.lane=blue", *(f"k{i}=v" for i in range(MAX_MEMBERS))])
    edit = set_lane(full, "gray")
    assert edit.header == ",".join(["tidegate.lane=gray", *(f"k{i}=v" for i in range(MAX_MEMBERS - 1))])


def test_empty_members_are_not_passed_on() -> None:
    assert with_lane("a=1,,b=2", "gray") == "a=1,b=2,tidegate.lane=gray"
    assert with_lane(" , a=1, ,", "gray") == "a=1,tidegate.lane=gray"
    assert sendable("a=1,,b=2") == ("a=1,b=2", "")
    assert join_headers(["a=1", " ", "b=2"]) == "a=1,b=2"


def test_members_a_header_cannot_carry_are_dropped_with_a_reason() -> None:
    header, problem = sendable("a=1,name=caf\xe9;p=1, b=2,c=\x00,d=\u4e2d")
    assert header == "a=1, b=2" and "3 baggage member(s)" in problem
    assert with_lane("caf\xe9=1,tidegate.lane=blue", "gray") == "tidegate.lane=gray"
    assert sendable("a=1, b=2;p") == ("a=1, b=2;p", "")


def test_replacing_ours_does_not_count_it_twice_against_the_member_limit() -> None:
    almost = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS - 1))
    assert with_lane(almost + ",tidegate.lane=blue", "gray") == almost + ",tidegate.lane=gray"


def test_lane_key_constant() -> None:
    assert LANE_KEY == "tidegate.lane"


@pytest.mark.parametrize("header", ["tidegate.lane", "tidegate.lane=", "tidegate.lane=%ff", "tidegate.lane=a;=b", ",,,"])
def test_odd_inputs_read_as_no_lane(header: str) -> None:
    assert get_lane(header) == ""


def test_a_header_already_carrying_the_lane_is_passed_on_unchanged() -> None:
    header = "a=1 , tidegate.lane=gray ,b=2"
    assert with_lane(header, "gray") is header
    assert with_lane("tidegate.lane=gray,tidegate.lane=gray", "gray") == "tidegate.lane=gray"
