"""The control plane's metric rings, exactly, with time passed in."""

from __future__ import annotations

import pytest

from tidegate.control.metrics_store import ALL, BUCKETS, FIELDS, MetricsError, MetricsStore, Ring, quantile

T0 = 1_000_020.0  # a multiple of 60: every ring's periods start on it


def row(resource: str, passed: int, *, kind: str = "in", blocked: dict[str, int] | None = None, errors: int = 0, rt: float = 0.0):
    histogram = [0] * (len(BUCKETS) + 1)
    histogram[2] = passed  # every call in (0.01, 0.025]
    return [kind, resource, passed, blocked or {}, errors, passed, rt, histogram]


def push(*rows):
    return {"interval": 5, "rows": list(rows)}


def test_a_push_lands_in_every_ring_and_in_the_rollup() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 10, errors=2, rt=0.2), row("GET /b", 5, blocked={"flow": 3})), "orders", "", T0 + 1)
    one_second = store.query("orders", None, None, T0, T0 + 4, 1, now=T0 + 4)
    assert one_second["t"] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    assert one_second["passed"] == [0, 15, 0, 0, 0]
    assert one_second["blocked"] == [0, 3, 0, 0, 0]
    assert one_second["errors"] == [0, 2, 0, 0, 0]
    assert one_second["resolution"] == 1
    per_resource = store.query("orders", "GET /a", None, T0, T0 + 59, 60, now=T0 + 4)
    assert per_resource["passed"] == [10] and per_resource["resolution"] == 60
    ten = store.query("orders", "GET /b", None, T0, T0 + 10, 10, now=T0 + 4)
    assert ten["passed"] == [5, 0] and ten["blocked_qps"] == [0.3, 0.0]


def test_outbound_and_resource_rows_are_not_rolled_up() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 4), row("-> stock", 7, kind="out"), row("pay", 9, kind="res")), "cart", "gray", T0)
    assert store.query("cart", None, "gray", T0, T0, 1, now=T0)["passed"] == [4]
    assert store.query("cart", "-> stock", "gray", T0, T0, 1, now=T0)["passed"] == [7]


def test_tags_are_apart_and_summed_when_no_tag_is_asked() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 4)), "cart", "", T0)
    store.ingest(push(row("GET /a", 6)), "cart", "gray", T0)
    assert store.query("cart", None, "", T0, T0, 1, now=T0)["passed"] == [4]
    assert store.query("cart", None, "gray", T0, T0, 1, now=T0)["passed"] == [6]
    assert store.query("cart", None, None, T0, T0, 1, now=T0)["passed"] == [10]


def test_a_lapped_slot_reads_empty_and_is_zeroed_when_written_again() -> None:
    ring = Ring(1, 300)
    values = [1.0] * FIELDS
    ring.add(T0, values)
    ring.add(T0, values)
    assert ring.read(int(T0))[0] == 2.0
    ring.add(T0 + 300, values)  # the same slot, five minutes on
    assert ring.read(int(T0)) is None
    assert ring.read(int(T0 + 300))[0] == 1.0


def test_the_one_second_ring_forgets_after_five_minutes_and_the_ten_second_one_answers() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 3)), "s", "", T0)
    later = T0 + 600
    # 1 s can no longer hold T0: the 10 s ring answers, at its resolution
    answer = store.query("s", None, None, T0, T0 + 9, 1, now=later)
    assert answer["resolution"] == 10 and answer["passed"] == [3]
    day = store.query("s", None, None, T0, T0 + 3599, 60, now=T0 + 7200)
    assert day["resolution"] == 60 and sum(day["passed"]) == 3


def test_the_series_cap_drops_new_series_and_keeps_the_stored_ones() -> None:
    store = MetricsStore(max_series=2)
    store.ingest(push(row("GET /a", 1)), "s", "", T0)  # GET /a and the rollup
    store.ingest(push(row("GET /b", 1), row("GET /a", 1)), "s", "", T0)
    assert set(store.series) == {("s", "", "GET /a"), ("s", "", ALL)}
    assert store.dropped == 1
    assert store.query("s", "GET /a", None, T0, T0, 1, now=T0)["passed"] == [2]


def test_quantiles_interpolate_within_a_bucket() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    counts[0] = 50  # (0, 5 ms]
    counts[1] = 50  # (5, 10 ms]
    assert quantile(counts, 0.5) == pytest.approx(0.005)
    assert quantile(counts, 0.99) == pytest.approx(0.005 + 0.005 * 0.98)
    assert quantile([0] * (len(BUCKETS) + 1), 0.5) is None
    counts = [0] * (len(BUCKETS) + 1)
    counts[-1] = 1
    assert quantile(counts, 0.99) == BUCKETS[-1]


def test_a_chart_carries_p50_p99_rates_and_error_rate() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 10, errors=1, rt=0.15)), "s", "", T0)
    chart = store.query("s", None, None, T0, T0, 5, now=T0)
    assert chart["qps"] == [2.0]
    assert chart["error_rate"] == [0.1]
    assert chart["rt_avg_ms"] == [15.0]
    assert chart["p50_ms"][0] == pytest.approx(17.5, abs=0.01)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ([], "rows"),
        ({"rows": "x"}, "rows"),
        ({"rows": [["in", "r", 1]]}, "rows[0]"),
        ({"rows": [["sideways", "r", 1, {}, 0, 0, 0, []]]}, "rows[0][0]"),
        ({"rows": [["in", "", 1, {}, 0, 0, 0, []]]}, "rows[0][1]"),
        ({"rows": [["in", "a\x1b[2J", 1, {}, 0, 0, 0, []]]}, "rows[0][1]"),
        ({"rows": [["in", ALL, 1, {}, 0, 0, 0, []]]}, "rows[0][1]"),
        ({"rows": [["in", "r", -1, {}, 0, 0, 0, []]]}, "rows[0][2]"),
        ({"rows": [["in", "r", float("nan"), {}, 0, 0, 0, []]]}, "rows[0][2]"),
        ({"rows": [["in", "r", 1, {"no spaces": 1}, 0, 0, 0, []]]}, "rows[0][3]"),
        ({"rows": [["in", "r", 1, {}, 0, 0, 0, [1, 2]]]}, "rows[0][7]"),
    ],
)
def test_a_bad_push_is_refused_naming_the_field_and_stores_nothing(bad, field) -> None:
    store = MetricsStore()
    with pytest.raises(MetricsError) as refused:
        store.ingest(bad, "s", "", T0)
    assert refused.value.field == field
    assert store.series == {}


@pytest.mark.parametrize(
    ("start", "end", "step", "field"),
    [(T0, T0 - 1, 1, "to"), (T0, T0, 0, "step"), (T0, T0 + 86400, 1, "step"), (float("inf"), T0, 1, "from")],
)
def test_a_bad_query_names_its_parameter(start, end, step, field) -> None:
    with pytest.raises(MetricsError) as refused:
        MetricsStore().query("s", None, None, start, end, step, now=T0)
    assert refused.value.field == field


def test_resource_totals_for_the_console() -> None:
    store = MetricsStore()
    store.ingest(push(row("GET /a", 10, blocked={"flow": 2}, errors=1, rt=0.1)), "s", "", T0)
    store.ingest(push(row("GET /a", 10, blocked={"breaker": 1})), "s", "gray", T0 + 1)
    table = {r["resource"]: r for r in store.resources("s")}
    assert table["GET /a"]["passed"] == 20
    assert table["GET /a"]["blocked_by_kind"] == {"breaker": 1, "flow": 2}
    assert table["GET /a"]["errors"] == 1
    assert table["GET /a"]["rt_avg_ms"] == 5.0


def test_window_sums_the_slots_that_begin_inside_it() -> None:
    store = MetricsStore()
    for second in range(10):
        store.ingest(push(row("GET /a", 10, errors=second % 2)), "orders", "v2", T0 + second + 0.5)
    store.ingest(push(row("GET /a", 99)), "orders", "", T0 + 3.5)  # base: another series
    window = store.window("orders", "v2", ALL, T0 + 2, T0 + 6, now=T0 + 10)
    assert (window[0], window[2]) == (40, 2)  # seconds 2, 3, 4, 5: 40 requests, 2 errors
    assert store.window("orders", "v2", ALL, T0 + 2.5, T0 + 6, now=T0 + 10)[0] == 30  # a slot that began before the window is left out
    assert store.window("orders", "v2", "GET /a", T0, T0 + 10, now=T0 + 10)[0] == 100  # the route's own series
    assert store.window("orders", "", ALL, T0, T0 + 10, now=T0 + 10)[0] == 99
    assert store.window("nothing", "v2", ALL, T0, T0 + 10, now=T0 + 10) == [0.0] * FIELDS
