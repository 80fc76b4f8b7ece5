"""Per-row backoff and the global failure rate limit: pure values, clock and jitter passed in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.planning import backoff
from reconciler.planning.backoff import RateLimiter, RowBackoff


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        pytest.param(0, 0.5, 0.0, id="no-failure-no-delay"),
        pytest.param(-3, 0.0, 0.0, id="negative-is-no-failure"),
        pytest.param(1, 0.0, 0.5, id="first-failure-low-jitter"),
        pytest.param(1, 0.5, 0.75, id="first-failure-mid-jitter"),
        pytest.param(2, 0.0, 1.0, id="doubles"),
        pytest.param(4, 0.0, 4.0, id="doubles-again"),
        pytest.param(7, 0.0, 30.0, id="capped-at-a-minute"),
        pytest.param(10_000, 0.0, 30.0, id="no-overflow"),
    ],
)
def test_next_delay(failures: int, jitter: float, expected: float) -> None:
    assert backoff.next_delay(failures, jitter=jitter) == pytest.approx(expected)


@given(st.integers(min_value=1, max_value=500), st.floats(min_value=0.0, max_value=0.999999))
def test_next_delay_stays_within_half_and_cap(failures: int, jitter: float) -> None:
    raw = min(60.0, 2.0 ** min(failures - 1, 62))
    delay = backoff.next_delay(failures, jitter=jitter)
    assert raw / 2 <= delay < raw or delay == raw / 2
    assert delay <= backoff.DEFAULT_CAP


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=100))
def test_next_delay_never_shrinks_as_failures_grow(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert backoff.next_delay(low, jitter=0.0) <= backoff.next_delay(high, jitter=0.0)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, math.nan])
def test_jitter_outside_unit_interval_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff.next_delay(1, jitter=jitter)


def test_custom_base_and_cap() -> None:
    assert backoff.next_delay(3, base=2.0, cap=5.0, jitter=0.0) == 2.5


def test_failures_accumulate_for_the_same_spec() -> None:
    first = backoff.record_failure(None, now=100.0, spec_hash="h1", message="boom", jitter=0.0)
    second = backoff.record_failure(first, now=101.0, spec_hash="h1", message="again", jitter=0.0)
    assert first == RowBackoff(1, 100.5, "h1", "boom")
    assert second == RowBackoff(2, 102.0, "h1", "again")


def test_a_spec_change_resets_the_streak() -> None:
    streak = RowBackoff(6, 130.0, "h1", "boom")
    fresh = backoff.record_failure(streak, now=100.0, spec_hash="h2", message="new", jitter=0.0)
    assert fresh == RowBackoff(1, 100.5, "h2", "new")


@pytest.mark.parametrize(
    ("now", "spec_hash", "held"),
    [
        pytest.param(10.0, "h1", True, id="before-next-attempt"),
        pytest.param(12.0, "h1", False, id="at-next-attempt"),
        pytest.param(10.0, "h2", False, id="spec-changed"),
        pytest.param(10.0, None, False, id="row-became-malformed"),
    ],
)
def test_holds(now: float, spec_hash: str | None, held: bool) -> None:
    assert RowBackoff(3, 12.0, "h1", "boom").holds(now=now, spec_hash=spec_hash) is held


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    bucket = RateLimiter.full(capacity=2, rate=1.0, now=0.0)
    allowed, bucket = bucket.take(0.0)
    assert allowed
    allowed, bucket = bucket.take(0.0)
    assert allowed
    allowed, bucket = bucket.take(0.0)
    assert not allowed
    assert bucket.wait_time(0.0) == pytest.approx(1.0)
    allowed, bucket = bucket.take(0.5)
    assert not allowed
    allowed, bucket = bucket.take(1.0)
    assert allowed


def test_rate_limiter_never_holds_more_than_its_capacity() -> None:
    bucket = RateLimiter.full(capacity=3, rate=10.0, now=0.0)
    assert bucket.refilled(1_000.0).tokens == 3


def test_rate_limiter_ignores_a_clock_going_backwards() -> None:
    _, bucket = RateLimiter.full(capacity=1, rate=1.0, now=10.0).take(10.0)
    assert bucket.refilled(5.0) == bucket
    assert not bucket.take(5.0)[0]


def test_rate_limiter_with_no_refill_waits_forever() -> None:
    _, bucket = RateLimiter.full(capacity=1, rate=0.0, now=0.0).take(0.0)
    assert bucket.wait_time(100.0) == math.inf


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, -1.0)])
def test_rate_limiter_refuses_nonsense(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter.full(capacity=capacity, rate=rate, now=0.0)


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=50))
def test_rate_limiter_lets_through_at_most_capacity_plus_refill(gaps: list[float]) -> None:
    bucket, now, allowed_count = RateLimiter.full(capacity=3, rate=2.0, now=0.0), 0.0, 0
    for gap in gaps:
        now += gap
        allowed, bucket = bucket.take(now)
        allowed_count += allowed
    assert allowed_count <= 3 + 2.0 * now + 1e-9


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (5, 16.0), (7, 60.0), (10_000, 60.0)],
)
def test_one_exponential_formula_for_rows_crash_loops_and_nodes(
    failures: int, expected: float
) -> None:
    from reconciler.nodes import health

    assert backoff.exponential(failures, base=1.0, cap=60.0) == expected
    assert backoff.crash_delay(failures) == expected
    policy = health.HealthPolicy(backoff_initial=1.0, backoff_cap=60.0)
    assert policy.retry_delay(failures) == expected
    assert backoff.next_delay(failures, jitter=0.0) == expected / 2


@pytest.mark.parametrize(
    ("delay", "exit_code", "restarts", "expected"),
    [
        (16.0, 1, 5, "back-off 16s restarting (exit 1, 5 restarts)"),
        (1.0, 137, 1, "back-off 1s restarting (exit 137, 1 restart)"),
        (60.0, None, 9, "back-off 60s restarting (exited, 9 restarts)"),
    ],
)
def test_crash_message(delay: float, exit_code: int | None, restarts: int, expected: str) -> None:
    assert backoff.crash_message(delay=delay, exit_code=exit_code, restarts=restarts) == expected
