"""Retry policy for failing rows, as pure values and functions.

Where this sits in a pass: the executor records each failed action with ``record_failure`` and
drops the entry on success; the next pass hands the entries to ``planning.plan``, which turns a
row that is still backing off into a ``Blocked`` action instead of hammering the engine again.
A ``RateLimiter`` bounds how many failing actions the executor lets through per second across all
rows, so a storm of bad rows cannot flood the engines.

Nothing here reads a clock or draws random numbers: ``now`` and ``jitter`` are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: Delay before the second attempt, in seconds.
DEFAULT_BASE = 1.0
#: No row waits longer than this between attempts ("capped around a minute").
DEFAULT_CAP = 60.0
#: A container that has run this long since its last restart starts a new crash streak.
CRASH_RESET_AFTER = 600.0


def exponential(failures: int, *, base: float, cap: float) -> float:
    """``base``, ``2·base``, ``4·base`` … after 1, 2, 3 … failures, capped at ``cap``; 0 for none.

    The one backoff formula of reconciler: rows (``next_delay``, crash loops) and node
    reconnects (``nodes.health.HealthPolicy.retry_delay``) all use it.
    """
    if failures <= 0:
        return 0.0
    # ldexp(base, 62) already dwarfs any sane cap; clamping the exponent avoids an overflow.
    return min(cap, math.ldexp(base, min(failures - 1, 62)))


def next_delay(
    failures: int, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, jitter: float = 0.0
) -> float:
    """Seconds to wait after ``failures`` consecutive failures.

    Exponential (``base``, ``2·base``, ``4·base`` …) and capped at ``cap``; ``jitter`` in [0, 1)
    spreads the delay over its upper half ("equal jitter"): 0 gives half the delay, values near 1
    give almost all of it, so the result is always in ``[delay/2, delay)`` and never above ``cap``.
    Zero or fewer failures mean no delay.
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    raw = exponential(failures, base=base, cap=cap)
    return raw / 2 + raw / 2 * jitter


@dataclass(frozen=True, slots=True)
class RowBackoff:
    """Why and until when one desired row is left alone.

    ``spec_hash`` is the hash the failures were recorded against: a row whose spec has changed
    since is a new attempt and is not held back (reset on spec change).
    """

    failures: int
    next_attempt_at: float
    spec_hash: str | None
    #: The last failure, in words for the row's status (e.g. "image busybox:nope not found").
    message: str = ""

    def holds(self, *, now: float, spec_hash: str | None) -> bool:
        """True while the row must wait: same spec, and ``now`` is before the next attempt."""
        return self.spec_hash == spec_hash and now < self.next_attempt_at


def record_failure(
    previous: RowBackoff | None,
    *,
    now: float,
    spec_hash: str | None,
    message: str,
    jitter: float,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_CAP,
) -> RowBackoff:
    """The entry after one more failure of a row at ``now``.

    Failures recorded against another spec hash do not count: the streak starts again at one.
    """
    streak = previous.failures if previous is not None and previous.spec_hash == spec_hash else 0
    failures = streak + 1
    delay = next_delay(failures, base=base, cap=cap, jitter=jitter)
    return RowBackoff(failures, now + delay, spec_hash, message)


def crash_delay(restarts: int) -> float:
    """Seconds before restarting a container that has exited ``restarts`` times in a row.

    1, 2, 4 … 60 s, without jitter (one container, so nothing to spread): at most 6 starts in
    any 40 s, counting the first.
    """
    return exponential(restarts, base=DEFAULT_BASE, cap=DEFAULT_CAP)


def crash_message(*, delay: float, exit_code: int | None, restarts: int) -> str:
    """``back-off 16s restarting (exit 1, 5 restarts)``: the status of a crash-looping row."""
    code = "exited" if exit_code is None else f"exit {exit_code}"
    plural = "restart" if restarts == 1 else "restarts"
    return f"back-off {delay:.0f}s restarting ({code}, {restarts} {plural})"


@dataclass(frozen=True, slots=True)
class RateLimiter:
    """A token bucket: up to ``capacity`` attempts at once, refilled at ``rate`` per second.

    A value: ``take`` returns the decision and the bucket's next state; keep the new state.
    """

    capacity: float
    rate: float
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, *, capacity: float, rate: float, now: float) -> RateLimiter:
        """A bucket holding ``capacity`` tokens at ``now``."""
        if capacity <= 0 or rate < 0:
            raise ValueError("capacity must be positive and rate non-negative")
        return cls(capacity, rate, capacity, now)

    def refilled(self, now: float) -> RateLimiter:
        """The bucket at ``now``; a clock that goes backwards adds nothing."""
        elapsed = max(0.0, now - self.updated_at)
        tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        return replace(self, tokens=tokens, updated_at=max(now, self.updated_at))

    def take(self, now: float, cost: float = 1.0) -> tuple[bool, RateLimiter]:
        """Try to spend ``cost`` tokens at ``now``: (allowed, the bucket afterwards)."""
        bucket = self.refilled(now)
        if bucket.tokens >= cost:
            return True, replace(bucket, tokens=bucket.tokens - cost)
        return False, bucket

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds from ``now`` until ``cost`` tokens are available (inf if never)."""
        missing = cost - self.refilled(now).tokens
        if missing <= 0:
            return 0.0
        return math.inf if self.rate == 0 else missing / self.rate
