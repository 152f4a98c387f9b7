"""Circuit breakers pinned with a fake clock: trip on the Nth bad call, recovery, one probe."""

from __future__ import annotations

import pytest

from tidegate.core.breaker import CLOSED, HALF_OPEN, OPEN, BreakerRule
from tidegate.core.governor import Governor
from tidegate.errors import BreakerOpenError, RuleError


def call(gov: Governor, at: float, rt_s: float = 0.0, error: bool = False) -> None:
    gov.entry("svc", at).exit(at + rt_s, error=error)


def with_breaker(rule: BreakerRule) -> tuple[Governor, list[tuple[str, str, float, float | None]]]:
    gov = Governor()
    events: list[tuple[str, str, float, float | None]] = []
    gov.add_breaker_listener(lambda r, a, b, now, snap: events.append((a, b, now, snap)))
    gov.load_breaker_rules([rule])
    return gov, events


SLOW = BreakerRule(
    "svc", "slow_ratio", 0.5, name="slow", max_allowed_rt_ms=100, min_request_amount=4, stat_interval_ms=10_000, retry_timeout_ms=2000
)


def test_slow_ratio_opens_on_the_call_that_reaches_the_ratio() -> None:
    gov, events = with_breaker(SLOW)
    for _ in range(3):
        call(gov, 10.0, rt_s=0.01)
    call(gov, 10.0, rt_s=0.5)  # 1 slow of 4: 0.25
    call(gov, 10.0, rt_s=0.5)  # 2 of 5: 0.4
    assert gov.breaker_states() == {"slow": CLOSED}
    call(gov, 10.0, rt_s=0.5)  # 3 of 6: 0.5 reaches the threshold, at exit time 10.5
    assert gov.breaker_states() == {"slow": OPEN}
    assert events == [(CLOSED, OPEN, 10.5, 0.5)]
    with pytest.raises(BreakerOpenError) as refused:
        gov.entry("svc", 12.0)
    assert refused.value.rule == "slow"
    assert refused.value.retry_after_s == 0.5
    assert refused.value.http_status == 503


def test_min_request_amount_holds_the_breaker_closed() -> None:
    gov, _ = with_breaker(SLOW)
    for _ in range(3):
        call(gov, 10.0, rt_s=0.5)  # 3 of 3 slow, but fewer than 4 calls
    assert gov.breaker_states() == {"slow": CLOSED}
    call(gov, 10.0, rt_s=0.5)
    assert gov.breaker_states() == {"slow": OPEN}


def tripped() -> tuple[Governor, list[tuple[str, str, float, float | None]]]:
    gov, events = with_breaker(SLOW)
    for _ in range(4):
        call(gov, 10.0, rt_s=0.5)  # opens at 10.5, retry at 12.5
    events.clear()
    return gov, events


def test_open_then_half_open_after_recovery_then_probe_success_closes() -> None:
    gov, events = tripped()
    with pytest.raises(BreakerOpenError):
        gov.entry("svc", 12.499)
    probe = gov.entry("svc", 12.5)
    assert gov.breaker_states() == {"slow": HALF_OPEN}
    with pytest.raises(BreakerOpenError):
        gov.entry("svc", 12.5)  # one probe per recovery
    probe.exit(12.51)
    assert gov.breaker_states() == {"slow": CLOSED}
    assert events == [(OPEN, HALF_OPEN, 12.5, None), (HALF_OPEN, CLOSED, 12.51, None)]
    # The window restarted empty: three slow calls are under the minimum amount again.
    for _ in range(3):
        call(gov, 13.0, rt_s=0.5)
    assert gov.breaker_states() == {"slow": CLOSED}


def test_probe_failure_opens_again_for_another_recovery_timeout() -> None:
    gov, events = tripped()
    gov.entry("svc", 13.0).exit(13.2)  # slow probe
    assert gov.breaker_states() == {"slow": OPEN}
    assert events[-1] == (HALF_OPEN, OPEN, 13.2, 1.0)
    with pytest.raises(BreakerOpenError):
        gov.entry("svc", 15.1)
    gov.entry("svc", 15.2).exit(15.2)
    assert gov.breaker_states() == {"slow": CLOSED}


def test_error_ratio_and_error_count() -> None:
    gov, _ = with_breaker(BreakerRule("svc", "error_ratio", 0.6, name="ratio", min_request_amount=5))
    for error in (False, False, True, True):
        call(gov, 1.0, error=error)
    call(gov, 1.0, error=True)  # 3 of 5 = 0.6
    assert gov.breaker_states() == {"ratio": OPEN}

    gov, _ = with_breaker(BreakerRule("svc", "error_count", 3, name="count", min_request_amount=0, stat_interval_ms=1000, buckets=2))
    call(gov, 1.0, error=True)
    call(gov, 1.7, error=True)
    call(gov, 2.1, error=True)  # the bucket of 1.0-1.5 left the 1 s window
    assert gov.breaker_states() == {"count": CLOSED}
    call(gov, 2.1, error=True)
    assert gov.breaker_states() == {"count": OPEN}


def test_probe_refused_by_a_second_breaker_reverts_to_open() -> None:
    gov = Governor()
    first = BreakerRule("svc", "error_count", 1, name="a", min_request_amount=0, retry_timeout_ms=1000)
    second = BreakerRule("svc", "error_count", 1, name="b", min_request_amount=0, retry_timeout_ms=5000)
    gov.load_breaker_rules([first, second])
    call(gov, 1.0, error=True)
    assert gov.breaker_states() == {"a": OPEN, "b": OPEN}
    with pytest.raises(BreakerOpenError) as refused:
        gov.entry("svc", 2.5)
    assert refused.value.rule == "b"
    assert gov.breaker_states() == {"a": OPEN, "b": OPEN}


def test_a_failing_listener_does_not_break_the_call() -> None:
    gov = Governor()
    gov.add_breaker_listener(lambda *_: 1 / 0)
    gov.load_breaker_rules([BreakerRule("svc", "error_count", 1, name="c", min_request_amount=0)])
    call(gov, 1.0, error=True)
    assert gov.breaker_states() == {"c": OPEN}


def test_invalid_breaker_rules_name_their_field() -> None:
    for rule, field in (
        (BreakerRule("svc", "slow_ratio", 0.5), "max_allowed_rt_ms"),
        (BreakerRule("svc", "error_ratio", 1.5), "threshold"),
        (BreakerRule("svc", "latency", 0.5), "strategy"),
        (BreakerRule("svc", "error_count", 2, stat_interval_ms=1000, buckets=3), "buckets"),
    ):
        with pytest.raises(RuleError) as bad:
            rule.validate()
        assert bad.value.field == field
