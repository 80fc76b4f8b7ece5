"""A node's health as a pure state machine: values in, values out, no clock, no I/O.

Where this sits: ``nodes.Node`` feeds it the outcome of every call it makes to its engine
(:func:`succeeded` / :func:`failed`) and acts on the result; ``db.Store.write_health`` writes
the state and every :class:`Transition` to SQL. The node logs one line per transition, e.g.
``node n2 is healthy again after 4 failures``.

States (``domain.Health``)::

    pending ──success──▶ healthy ◀──success (after a full recovery)── unhealthy
       │                    │                                             ▲
       └── threshold consecutive failures ─────────────────────────────────┘

* ``pending``: never reached since reconciler started following the node.
* ``healthy``: the last call succeeded, or fewer than ``failure_threshold`` calls in a row failed
  (the node is then *suspect*: probed again after a short backoff, still schedulable).
* ``unhealthy``: the threshold was crossed. Reconnects are attempted with capped exponential
  backoff (``backoff_initial`` doubling up to ``backoff_cap``, never hours: classic Swarm's
  uncapped backoff once left a recovered node stale for 3.5 h); a success resets it.

Only failures of the engine itself count (``errors.EngineError.engine_fault``: connection
failures, timeouts, 5xx that do not depend on the request); a 404, a 409 or a 500 caused by a
row's content is an answer, counted against that row, and proves the engine alive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.domain import Health, NodeName
from reconciler.planning import backoff


@dataclass(frozen=True, kw_only=True)
class HealthPolicy:
    failure_threshold: int = 3
    """Consecutive failed calls after which a node is ``unhealthy``."""

    backoff_initial: float = 1.0
    """Seconds before the first retry after a failure; doubled per further failure."""

    backoff_cap: float = 30.0
    """Upper bound of the delay between two reconnect attempts, in seconds."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold!r}")
        if not 0 < self.backoff_initial <= self.backoff_cap:
            raise ValueError("backoff_initial must be > 0 and <= backoff_cap")

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4 … capped.

        The same formula as a failing row's (``planning.backoff.exponential``), without jitter.
        """
        return backoff.exponential(failures, base=self.backoff_initial, cap=self.backoff_cap)


@dataclass(frozen=True, kw_only=True)
class HealthState:
    """Where one node stands; ``now`` values are the caller's monotonic clock."""

    health: Health = Health.PENDING
    #: Failed calls in a row; 0 after any success.
    failures: int = 0
    #: The newest failure, in words a person can act on; None once healthy again.
    last_error: str | None = None
    #: When the next probe or reconnect may be tried; None when nothing is pending.
    next_attempt_at: float | None = None

    @property
    def suspect(self) -> bool:
        """Healthy (or pending) but the last call failed: probe before trusting it."""
        return self.health is not Health.UNHEALTHY and self.failures > 0

    def attempt_due(self, now: float) -> bool:
        return self.next_attempt_at is None or now >= self.next_attempt_at


@dataclass(frozen=True, kw_only=True)
class Transition:
    """A change of ``health``; :attr:`message` is the one log line (and event) it deserves."""

    node: NodeName
    before: Health
    after: Health
    #: Failures in a row that preceded it (the count that crossed the threshold, or the length
    #: of the outage that just ended).
    failures: int
    error: str | None = None

    @property
    def reason(self) -> str:
        """The ``events.reason`` word."""
        if self.after is Health.HEALTHY:
            return "NodeRecovered" if self.before is Health.UNHEALTHY else "NodeHealthy"
        return "NodeUnhealthy"

    @property
    def warning(self) -> bool:
        return self.after is Health.UNHEALTHY

    @property
    def message(self) -> str:
        plural = "failure" if self.failures == 1 else "failures"
        if self.after is Health.HEALTHY and self.before is Health.UNHEALTHY:
            return f"node {self.node} is healthy again after {self.failures} {plural}"
        if self.after is Health.HEALTHY:
            return f"node {self.node} is healthy"
        never = " (never reached)" if self.before is Health.PENDING else ""
        return f"node {self.node} is unhealthy{never} after {self.failures} {plural}: {self.error}"


def succeeded(state: HealthState, *, node: NodeName) -> tuple[HealthState, Transition | None]:
    """The state after a successful call, and the transition it caused, if any.

    ``unhealthy`` only turns ``healthy`` through this call; the node calls it once its recovery
    (reconnect, specs, full refresh) has succeeded, not on any stray success.
    """
    after = HealthState(health=Health.HEALTHY)
    if state.health is Health.HEALTHY:
        return after, None
    return after, Transition(
        node=node, before=state.health, after=Health.HEALTHY, failures=state.failures
    )


def failed(
    state: HealthState, *, node: NodeName, error: str, now: float, policy: HealthPolicy
) -> tuple[HealthState, Transition | None]:
    """The state after a failed call at ``now``, and the transition it caused, if any."""
    failures = state.failures + 1
    crossed = failures >= policy.failure_threshold
    health = Health.UNHEALTHY if crossed else state.health
    after = replace(
        state,
        health=health,
        failures=failures,
        last_error=error,
        next_attempt_at=now + policy.retry_delay(failures),
    )
    if health is state.health:
        return after, None
    return after, Transition(
        node=node, before=state.health, after=health, failures=failures, error=error
    )
