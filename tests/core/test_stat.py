"""LeapArray statistics: bucket roll-over, window membership, minute history, exact and random."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.core.stat import STATISTIC_MAX_RT_MS, MinuteWindow, StatNode, Window


def test_second_window_keeps_two_half_second_buckets() -> None:
    window = Window(2, 1000)
    window.add_pass(10_000)
    window.add_pass(10_499)
    window.add_pass(10_500)
    assert window.pass_count(10_999) == 3
    # At 11_000 the bucket [10_000, 10_500) is no longer in the window, [10_500, 11_000) still is.
    assert window.pass_count(11_000) == 1
    assert window.pass_count(11_500) == 0


def test_completions_rt_and_errors() -> None:
    window = Window(2, 1000)
    assert window.min_rt(1_000) == STATISTIC_MAX_RT_MS
    window.add_complete(1_000, 30.0)
    window.add_complete(1_600, 12.5, error=True)
    assert window.success_count(1_700) == 2
    assert window.error_count(1_700) == 1
    assert window.rt_sum(1_700) == 42.5
    assert window.min_rt(1_700) == 12.5
    # Busiest bucket has 1 completion in 500 ms: 2 per second.
    assert window.max_success_per_second(1_700) == 2.0


def test_minute_window_is_fed_by_finished_buckets() -> None:
    node = StatNode()
    for t in (5_000, 5_100, 5_600):
        node.second.add_pass(t)
    node.second.add_block(5_700)
    assert node.previous_second_pass(5_900) == 0  # second 5 is not finished yet
    assert node.previous_second_pass(6_000) == 3
    assert node.minute.second(5) == (3, 1, 0, 0, 0.0)
    assert node.previous_second_pass(7_000) == 0


def test_clock_stepping_back_counts_in_the_live_bucket() -> None:
    window = Window(2, 1000)
    window.add_pass(2_700)
    window.roll(2_100)
    window.add_pass(2_100)
    assert window.pass_count(2_700) == 2


@settings(max_examples=200, deadline=None)
@given(
    sample_count=st.sampled_from([1, 2, 4, 5, 10]),
    steps=st.lists(st.tuples(st.integers(0, 700), st.sampled_from(["pass", "block", "ok", "error"])), max_size=60),
)
def test_window_totals_equal_events_inside_the_window(sample_count: int, steps: list[tuple[int, str]]) -> None:
    interval = 1000
    bucket = interval // sample_count
    window = Window(sample_count, interval)
    now = 50_000
    events: list[tuple[int, str]] = []
    for gap, kind in steps:
        now += gap
        if kind == "pass":
            window.add_pass(now)
        elif kind == "block":
            window.add_block(now)
        else:
            window.add_complete(now, 1.0, error=kind == "error")
        events.append((now, kind))
        start = now - now % bucket
        inside = [k for t, k in events if t - t % bucket >= start - interval + bucket]
        counts = (window.pass_count(now), window.block_count(now), window.success_count(now), window.error_count(now))
        assert min(counts) >= 0
        assert counts == (
            inside.count("pass"),
            inside.count("block"),
            inside.count("ok") + inside.count("error"),
            inside.count("error"),
        )


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.integers(0, 1500), max_size=80))
def test_minute_history_equals_passes_per_second(gaps: list[int]) -> None:
    node = StatNode()
    now = 100_000
    per_second: dict[int, int] = {}
    for gap in gaps:
        now += gap
        node.second.add_pass(now)
        per_second[now // 1000] = per_second.get(now // 1000, 0) + 1
    node.second.roll(now + 1000 - now % 1000)  # finish the last second
    for second, count in per_second.items():
        if second > now // 1000 - 60:
            assert node.minute.second(second)[0] == count


def test_minute_window_forgets_after_its_length() -> None:
    minute = MinuteWindow(3)
    node_window = Window(1, 1000, minute)
    node_window.add_pass(1_000)
    node_window.add_pass(4_000)  # second 4 reuses second 1's slot once finished
    node_window.roll(5_000)
    assert minute.second(1) == (0, 0, 0, 0, 0.0)
    assert minute.second(4)[0] == 1
