"""PURE: the ``container_status`` rows a pass leaves behind.

Where this sits in a pass: after the executor. ``runtime.controller`` hands over the desired
rows, the plan, the actions the retry budget held back, the executor's outcomes and the status
rows as the last pass left them, plus ``now``, one jitter value per failed row and the backoff
cap; :func:`status_rows` returns the row every desired name should have. The controller then
writes only the difference. No clock, no randomness: both are parameters.

The rules, in the order they are applied (a later one wins for the same name):

- A row the plan left as it is (``Plan.statuses``) gets that status; the failure streak of a
  row that is still the same spec is remembered for ``CRASH_RESET_AFTER`` seconds after its
  last attempt (so a container that exits again soon backs off further), then forgotten.
- A ``Blocked`` row (planned or held back by the retry budget) gets its reason; its streak is
  the one the plan started (``Plan.backoffs``: a crash loop) or the one it had.
- A succeeded action's row gets the outcome's phase; a ``Start`` keeps the streak (it restarts
  a container that may be crash-looping), any other action starts afresh.
- A failed action's row gets phase ``failed`` and one more failure, its next attempt after
  ``next_delay`` with the caller's jitter, capped at ``cap``.
- Every other desired row keeps its previous status row, or ``pending`` when it has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from reconciler.domain import ContainerId, DesiredContainer, NodeName, Phase, StatusRow
from reconciler.planning import backoff
from reconciler.planning.actions import (
    Action,
    Blocked,
    Plan,
    Recreate,
    RecreateReason,
    RowStatus,
    Start,
)

__all__ = ["ActionResult", "done_row", "status_rows"]


class ActionResult(Protocol):
    """What became of one action (``runtime.executor.Outcome`` provides it)."""

    @property
    def action(self) -> Action: ...
    @property
    def name(self) -> str | None: ...
    @property
    def ok(self) -> bool: ...
    @property
    def phase(self) -> Phase | None: ...
    @property
    def node(self) -> NodeName | None: ...
    @property
    def container_id(self) -> ContainerId | None: ...
    @property
    def message(self) -> str: ...


def status_rows(
    desired: Sequence[DesiredContainer],
    the_plan: Plan,
    *,
    limited: Iterable[Blocked] = (),
    outcomes: Iterable[ActionResult] = (),
    previous: Mapping[str, StatusRow],
    now: float,
    jitter: Mapping[str, float] | None = None,
    cap: float = backoff.DEFAULT_CAP,
) -> dict[str, StatusRow]:
    """The status row of every desired name after a pass; see the module docstring.

    A row equal to its previous one is returned as the very same object, so a caller can skip
    it by identity. ``jitter`` maps the names of failed rows to a value in [0, 1) (0 when
    missing).
    """
    hashes = {row.name: row.spec_hash for row in desired}
    wanted: dict[str, StatusRow] = {}
    for name, s in the_plan.statuses.items():
        wanted[name] = _unchanged(name, s, previous.get(name), hashes.get(name), now)
    for action in [*the_plan.actions, *limited]:
        if isinstance(action, Blocked):
            wanted[action.name] = _blocked_row(
                action, previous.get(action.name), hashes.get(action.name), the_plan
            )
    for outcome in outcomes:
        acted_on = outcome.name
        if acted_on is None or acted_on not in hashes or outcome.phase is None:
            continue  # a removal of an orphan or duplicate: no row of its own
        name = acted_on
        old = previous.get(name)
        if outcome.ok:
            wanted[name] = done_row(outcome, hashes[name], old)
        else:
            wanted[name] = _failed_row(
                outcome, hashes[name], old, now=now, jitter=(jitter or {}).get(name, 0.0), cap=cap
            )
    for row in desired:  # every desired row has a status row, if only "pending"
        if row.name not in wanted:
            wanted[row.name] = previous.get(row.name) or StatusRow(row.name, Phase.PENDING)
    return wanted


def done_row(outcome: ActionResult, spec_hash: str | None, old: StatusRow | None) -> StatusRow:
    """The status row of a row whose action succeeded.

    A ``Start`` or the replacement of an unhealthy container keeps the row's streak (it may be
    crash-looping: the next exit backs off further); a create, other recreate or stop is a fresh
    start.
    """
    assert outcome.name is not None and outcome.phase is not None
    action = outcome.action
    keeps = isinstance(action, Start) or (
        isinstance(action, Recreate) and action.reason is RecreateReason.UNHEALTHY
    )
    streak = _streak(old, spec_hash) if keeps else None
    return StatusRow(
        outcome.name,
        outcome.phase,
        outcome.node,
        outcome.container_id,
        outcome.message,
        spec_hash,
        streak[0] if streak else 0,
        streak[1] if streak else None,
    )


def _streak(old: StatusRow | None, spec_hash: str | None) -> tuple[int, float | None] | None:
    """(failures, next attempt) of ``old`` if it has a streak for this very spec."""
    if old is None or not old.failures or old.spec_hash != spec_hash:
        return None
    return old.failures, old.next_attempt_at


def _unchanged(
    name: str, s: RowStatus, old: StatusRow | None, spec_hash: str | None, now: float
) -> StatusRow:
    if old is not None and _same_status(old, s, spec_hash):
        return old  # a converged fleet: almost always; the same object, skipped by identity
    streak = _streak(old, spec_hash)
    if streak is not None and (streak[1] is None or now >= streak[1] + backoff.CRASH_RESET_AFTER):
        streak = None  # it has run long enough since its last attempt: forget the streak
    failures, next_attempt_at = streak or (0, None)
    row = StatusRow(
        name, s.phase, s.node, s.container_id, s.message, spec_hash, failures, next_attempt_at
    )
    return old if old == row else row


def _same_status(old: StatusRow, new: RowStatus, spec_hash: str | None) -> bool:
    """Would a row built from ``new`` without a streak equal ``old``?"""
    return (
        old.phase is new.phase
        and old.node == new.node
        and old.container_id == new.container_id
        and old.message == new.message
        and old.spec_hash == spec_hash
        and old.failures == 0
        and old.next_attempt_at is None
    )


def _blocked_row(
    action: Blocked, old: StatusRow | None, spec_hash: str | None, the_plan: Plan
) -> StatusRow:
    entry = the_plan.backoffs.get(action.name)
    failures, next_attempt_at = (
        (entry.failures, entry.next_attempt_at)
        if entry is not None
        else _streak(old, spec_hash) or (0, None)
    )
    return StatusRow(
        action.name,
        action.phase,
        action.node,
        action.container_id,
        action.reason,
        spec_hash,
        failures,
        next_attempt_at,
    )


def _failed_row(
    outcome: ActionResult,
    spec_hash: str | None,
    old: StatusRow | None,
    *,
    now: float,
    jitter: float,
    cap: float,
) -> StatusRow:
    assert outcome.name is not None
    entry = backoff.record_failure(
        backoff.RowBackoff(old.failures, old.next_attempt_at or now, old.spec_hash)
        if old
        else None,
        now=now,
        spec_hash=spec_hash,
        message=outcome.message,
        jitter=jitter,
        cap=cap,
    )
    return StatusRow(
        outcome.name,
        Phase.FAILED,
        outcome.node,
        outcome.container_id,
        f"{outcome.message} (retry in {entry.next_attempt_at - now:.0f}s)",
        spec_hash,
        entry.failures,
        entry.next_attempt_at,
    )
