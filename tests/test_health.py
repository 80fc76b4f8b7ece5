"""The node health state machine, with plain values (no engine, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.domain import Health, NodeName
from reconciler.nodes import health
from reconciler.nodes.settings import NodeSettings

N = NodeName("n2")
POLICY = health.HealthPolicy()


def fail(state: health.HealthState, times: int = 1, *, now: float = 0.0, error: str = "refused"):
    transitions = []
    for _ in range(times):
        state, transition = health.failed(state, node=N, error=error, now=now, policy=POLICY)
        transitions.append(transition)
    return state, transitions


def test_a_new_node_is_pending_and_due_at_once() -> None:
    state = health.HealthState()
    assert state.health is Health.PENDING
    assert state.attempt_due(0.0)
    assert not state.suspect


def test_first_success_makes_a_pending_node_healthy() -> None:
    state, transition = health.succeeded(health.HealthState(), node=N)
    assert state == health.HealthState(health=Health.HEALTHY)
    assert transition is not None
    assert transition.reason == "NodeHealthy"
    assert transition.message == "node n2 is healthy"
    assert not transition.warning


@pytest.mark.parametrize("start", [Health.HEALTHY, Health.PENDING], ids=["healthy", "pending"])
def test_threshold_consecutive_failures_make_a_node_unhealthy(start: Health) -> None:
    state, transitions = fail(health.HealthState(health=start), 3, error="connection refused")
    assert transitions[:2] == [None, None]
    last = transitions[2]
    assert last is not None and last.after is Health.UNHEALTHY and last.warning
    assert state.health is Health.UNHEALTHY
    assert state.failures == 3
    assert state.last_error == "connection refused"
    never = " (never reached)" if start is Health.PENDING else ""
    assert last.message == f"node n2 is unhealthy{never} after 3 failures: connection refused"


def test_below_the_threshold_a_healthy_node_is_suspect_but_still_healthy() -> None:
    state, transitions = fail(health.HealthState(health=Health.HEALTHY), 2, now=10.0)
    assert transitions == [None, None]
    assert state.health is Health.HEALTHY
    assert state.suspect
    assert state.next_attempt_at == 10.0 + 2.0
    assert not state.attempt_due(11.9)
    assert state.attempt_due(12.0)


def test_a_success_resets_the_failure_count_without_a_transition() -> None:
    state, _ = fail(health.HealthState(health=Health.HEALTHY), 2)
    state, transition = health.succeeded(state, node=N)
    assert transition is None
    assert state == health.HealthState(health=Health.HEALTHY)
    state, _ = fail(state, 2)
    assert state.health is Health.HEALTHY, "the count starts again after a success"


def test_recovery_says_how_many_failures_it_ended() -> None:
    state, _ = fail(health.HealthState(health=Health.HEALTHY), 4)
    state, transition = health.succeeded(state, node=N)
    assert transition is not None
    assert transition.message == "node n2 is healthy again after 4 failures"
    assert transition.reason == "NodeRecovered"
    assert state.last_error is None and state.failures == 0


def test_failures_while_unhealthy_cause_no_further_transition() -> None:
    state, transitions = fail(health.HealthState(health=Health.HEALTHY), 6)
    assert [t is not None for t in transitions] == [False, False, True, False, False, False]
    state, _ = fail(state, error="certificate verification failed")
    assert state.last_error == "certificate verification failed", "the newest error is kept"


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (100, 30.0)],
)
def test_backoff_doubles_and_is_capped(failures: int, delay: float) -> None:
    assert POLICY.retry_delay(failures) == delay


def test_backoff_resets_on_success() -> None:
    state, _ = fail(health.HealthState(health=Health.HEALTHY), 8, now=100.0)
    assert state.next_attempt_at == 130.0
    state, _ = health.succeeded(state, node=N)
    state, _ = fail(state, now=200.0)
    assert state.next_attempt_at == 201.0


@given(failures=st.integers(min_value=0, max_value=10_000))
def test_backoff_never_exceeds_the_cap(failures: int) -> None:
    policy = health.HealthPolicy(backoff_initial=0.5, backoff_cap=20.0)
    assert 0.0 <= policy.retry_delay(failures) <= 20.0


@given(outcomes=st.lists(st.booleans(), max_size=60))
def test_unhealthy_exactly_when_the_last_run_of_failures_reached_the_threshold(
    outcomes: list[bool],
) -> None:
    """Feed a random sequence of successes (True) and failures (False).

    A success turns the node healthy (the node only calls ``succeeded`` for an unhealthy node
    after a full recovery, which is a success too).
    """
    state = health.HealthState()
    run = 0
    for ok in outcomes:
        if ok:
            state, _ = health.succeeded(state, node=N)
            run = 0
        else:
            state, _ = health.failed(state, node=N, error="x", now=0.0, policy=POLICY)
            run += 1
    assert state.failures == run
    if run >= POLICY.failure_threshold:
        assert state.health is Health.UNHEALTHY
    elif not outcomes or (not any(outcomes)):
        assert state.health is Health.PENDING
    else:
        assert state.health is Health.HEALTHY


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        health.HealthPolicy(failure_threshold=0)
    with pytest.raises(ValueError):
        health.HealthPolicy(backoff_initial=60, backoff_cap=30)


def test_default_settings_are_of_the_documented_order_of_magnitude() -> None:
    """The defaults promise: unhealthy within 30 s of a hang; a recovered engine is retried
    within the cap, so it is healthy again within 15 s however long it was away."""
    settings = NodeSettings()
    policy = settings.policy
    assert policy.failure_threshold == 3
    assert 5 <= policy.backoff_cap <= 12  # + probe_timeout stays under 15 s
    assert 20 <= settings.refresh_interval <= 60
    # Worst case to notice a hang: a refresh in flight (call_timeout), then two probes with
    # their backoff; or a heartbeat and three probes. Both must stay under 30 s.
    worst = max(
        settings.call_timeout
        + 2 * settings.probe_timeout
        + policy.retry_delay(1)
        + policy.retry_delay(2),
        settings.heartbeat_interval
        + 3 * settings.probe_timeout
        + policy.retry_delay(1)
        + policy.retry_delay(2),
    )
    assert worst < 30
