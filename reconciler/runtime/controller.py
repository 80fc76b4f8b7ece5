"""One reconcile pass: load, plan, execute, record.

```
desired rows ──(cached by generation)──┐
node snapshots (cluster, in memory) ───┼─▶ planning.plan ─▶ executor ─▶ status rows + events
status rows (cached: backoff) ─────────┘
```

The pass is level-based: it reads everything it needs every time and never trusts an event to
say what changed. It is cheap when nothing changed: the desired rows are re-read only when the
``change_counters`` generation moved, status rows are written only when they differ, and the
planner is pure CPU over in-memory snapshots.

While a long pass runs (200 creates take ~20 s on two cores), the status rows and events of the
actions that succeeded are written every ``status_every`` seconds, so people watching
``container_status`` see the rows turn ``running`` as they do; the rest (failures with their
backoff, blocked rows, removals) is written at the end of the pass.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler import planning
from reconciler.db import store as store_mod
from reconciler.domain import DesiredContainer, Health, NodeName, NodeSnapshot, Phase
from reconciler.planning import backoff, placement, statuses
from reconciler.runtime import executor
from reconciler.runtime import services as services_hook
from reconciler.settings import Settings
from reconciler.spec import policy as spec_policy

log = logging.getLogger(__name__)


class NodeSource(Protocol):
    """What the controller needs of the cluster (``nodes.cluster.Cluster`` provides it)."""

    def snapshots(self) -> Mapping[NodeName, NodeSnapshot]: ...

    def handles(self) -> Mapping[NodeName, executor.NodeHandle]: ...


@dataclass(frozen=True)
class PassResult:
    plan: planning.Plan
    outcomes: tuple[executor.Outcome, ...]
    #: Rows whose status changed in this pass.
    status_changes: int
    seconds: float

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)


class Controller:
    """Holds the caches one pass hands to the next; ``reconcile`` runs one pass."""

    def __init__(
        self,
        *,
        store: store_mod.Store,
        cluster: NodeSource,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        status_every: float = 0.5,
    ) -> None:
        self._store = store
        self._status_every = status_every
        self._cluster = cluster
        self._settings = settings
        self._usage: dict[NodeName, tuple[float, int, int, int]] = {}
        self._placement = placement.Policy(
            strategy=placement.Strategy(settings.strategy),
            overcommit=settings.overcommit,
            node_grace=settings.node_grace,
        )
        self._clock = clock
        self._services = services_hook.ServiceHook(store)
        self._jitter = jitter
        self._executor = executor.Executor(
            max_per_node=settings.max_actions_per_node,
            pulls=executor.PullSettings(
                docker_config=settings.docker_config, timeout=settings.pull_timeout
            ),
        )
        self._policy = load_policy(settings.policy_file)
        self._generation: int | None = None
        self._desired: Sequence[DesiredContainer] = ()
        self._status: store_mod.StatusCache | None = None
        self._last_plan: (
            tuple[Sequence[DesiredContainer], dict[NodeName, NodeSnapshot], planning.Plan] | None
        ) = None
        self._limiter = backoff.RateLimiter.full(
            capacity=settings.retry_burst, rate=settings.retries_per_second, now=clock()
        )

    def close(self) -> None:
        self._executor.close()

    def phase_counts(self) -> dict[str, int]:
        """Rows per phase in the status rows last recorded (call it from the pass's thread)."""
        rows = self._status.rows().values() if self._status is not None else ()
        return dict(collections.Counter(str(row.phase) for row in rows))

    def next_retry_at(self) -> float | None:
        """The earliest time (epoch seconds, after now) at which a backing-off row may be tried
        again: the daemon wakes then, so a 1 s back-off is not rounded up to the interval."""
        if self._status is None:
            return None
        now = self._clock()
        due = [
            row.next_attempt_at
            for row in self._status.rows().values()
            if row.next_attempt_at is not None and row.next_attempt_at > now
        ]
        step = self._services.next_due()  # a rolling update's monitor window or delay ends
        if step is not None and step > now:
            due.append(step)
        return min(due, default=None)

    def plan(self) -> planning.Plan:
        """The plan a pass would carry out now; changes nothing."""
        rows, backoffs = self._load()
        return self._plan(rows, self._cluster.snapshots(), backoffs, self._clock())

    def reset(self) -> None:
        """Forget what the caches say the tables hold (another controller may have written
        them): the next pass reads the desired and status rows afresh. Called on becoming
        leader."""
        self._generation = None
        self._status = None
        self._last_plan = None

    def reconcile(self, *, may_act: Callable[[], bool] | None = None) -> PassResult:
        """Run one pass. Raises only when the database cannot be read or written (or, with a
        lease, ``NotLeader`` when its result can no longer be recorded). ``may_act`` is the
        lease's fence, asked before each Docker call."""
        started = time.monotonic()
        rows, backoffs = self._load()
        self._services.save(now=self._clock())  # durable before anything is acted on
        now = self._clock()
        the_plan = self._plan(rows, self._cluster.snapshots(), backoffs, now)
        actions, limited = self._rate_limit(the_plan.actions, backoffs, now)
        progress = _Progress(self, {row.name: row.spec_hash for row in rows})
        outcomes = self._executor.execute(
            actions, self._cluster.handles(), on_outcome=progress.add, may_act=may_act
        )
        wanted = self._status_rows(rows, the_plan, limited, outcomes, now=self._clock())
        written = self._record(wanted, [o for o in outcomes if not progress.recorded(o)])
        self._write_usage(rows)
        result = PassResult(the_plan, tuple(outcomes), written, time.monotonic() - started)
        if the_plan.changes:
            log.info("pass: %s (%.2fs)", the_plan.summary(), result.seconds)
        return result

    def _plan(
        self,
        rows: Sequence[DesiredContainer],
        snapshots: Mapping[NodeName, NodeSnapshot],
        backoffs: Mapping[str, backoff.RowBackoff],
        now: float,
    ) -> planning.Plan:
        """``planning.plan``, reusing the last plan when its inputs are the very same objects.

        The planner is pure and, without backoff entries, does not depend on ``now``; the
        desired rows are the cached list until the generation moves, and a node hands out the
        same snapshot until its picture changes. So a pass over a quiet fleet skips planning.
        """
        last = self._last_plan
        if (
            last is not None
            and not backoffs
            and last[0] is rows
            # An unhealthy node's rows move once its grace is over: that depends on ``now``.
            and not any(s.health is Health.UNHEALTHY for s in snapshots.values())
            and len(last[1]) == len(snapshots)
            and all(snapshots.get(name) is snap for name, snap in last[1].items())
        ):
            return last[2]
        assert self._status is not None
        the_plan = planning.plan(
            rows,
            snapshots,
            now=now,
            backoff=backoffs,
            previous=self._status.rows(),
            policy=self._placement,
        )
        self._last_plan = (rows, dict(snapshots), the_plan)
        return the_plan

    # -- load ---------------------------------------------------------------------------

    def _load(self) -> tuple[Sequence[DesiredContainer], dict[str, backoff.RowBackoff]]:
        loaded = self._store.load_desired(known_generation=self._generation)
        if loaded.rows is not None:
            # Rows the admission policy refuses fail here, before the planner sees their spec.
            self._desired = [spec_policy.admit(row, self._policy) for row in loaded.rows]
        self._generation = loaded.generation
        if self._status is None:
            self._status = self._store.load_status()
        backoffs = {
            name: backoff.RowBackoff(row.failures, row.next_attempt_at, row.spec_hash, row.message)
            for name, row in self._status.rows().items()
            if row.failures and row.next_attempt_at is not None
        }
        # Services expand into slot rows here, planned like any other row.
        rows = self._services.merge(
            self._desired, self._cluster.snapshots(), self._status.rows(), now=self._clock()
        )
        return rows, backoffs

    def _rate_limit(
        self,
        actions: Sequence[planning.Action],
        backoffs: Mapping[str, backoff.RowBackoff],
        now: float,
    ) -> tuple[list[planning.Action], list[planning.Blocked]]:
        """Let retries of failing rows through only as fast as the global budget allows."""
        allowed: list[planning.Action] = []
        limited: list[planning.Blocked] = []
        for action in actions:
            name = action.name
            if name is not None and name in backoffs and not isinstance(action, planning.Blocked):
                ok, self._limiter = self._limiter.take(now)
                if not ok:
                    limited.append(
                        planning.Blocked(
                            name,
                            Phase.FAILED,
                            f"{backoffs[name].message} (retry rate-limited)",
                            cause="rate-limited",
                        )
                    )
                    continue
            allowed.append(action)
        return allowed, limited

    # -- record -------------------------------------------------------------------------

    def _write_usage(self, rows: Sequence[DesiredContainer]) -> None:
        """The nodes' reservations and managed containers (``node ls``), when they changed."""
        usage = placement.node_usage(rows, self._cluster.snapshots())
        if usage == self._usage:
            return
        self._store.write_node_usage(
            {node: store_mod.NodeUsage(*values) for node, values in usage.items()}
        )
        self._usage = usage

    def _status_rows(
        self,
        rows: Sequence[DesiredContainer],
        the_plan: planning.Plan,
        limited: Sequence[planning.Blocked],
        outcomes: Sequence[executor.Outcome],
        *,
        now: float,
    ) -> dict[str, store_mod.StatusRow]:
        """``planning.status_rows`` with this pass's clock and one jitter value per failure."""
        assert self._status is not None
        wanted = planning.status_rows(
            rows,
            the_plan,
            limited=limited,
            outcomes=outcomes,
            previous=self._status.rows(),
            now=now,
            jitter={o.name: self._jitter() for o in outcomes if not o.ok and o.name is not None},
            cap=self._settings.row_backoff_cap,
        )
        return self._services.annotate(wanted)

    def _record(
        self, wanted: Mapping[str, store_mod.StatusRow], outcomes: Sequence[executor.Outcome]
    ) -> int:
        assert self._status is not None
        upserts, deletes = self._status.changes(wanted)
        # Keep the message stable across passes for a row that stays blocked for the same
        # reason: only phase/node/container/message changes are events worth a row.
        events = [_event(o) for o in outcomes]
        events += [
            store_mod.Event(f"container/{row.name}", "Blocked", row.message, "Warning")
            for row in upserts
            if row.phase in (Phase.FAILED, Phase.UNSCHEDULABLE)
            and not any(o.name == row.name for o in outcomes)
            and _message_changed(self._status.get(row.name), row)
        ]
        if not upserts and not deletes and not events:
            return 0
        self._write_status(upserts, deletes, events)
        return len(upserts) + len(deletes)

    def _write_status(
        self,
        upserts: Sequence[store_mod.StatusRow],
        deletes: Sequence[str],
        events: Sequence[store_mod.Event],
    ) -> None:
        """One transaction; the cache learns the rows once it has committed."""
        assert self._status is not None
        self._store.record_pass(upserts=upserts, deletes=deletes, events=events, now=self._clock())
        self._status.remember(upserts, deletes)


class _Progress:
    """Writes the status rows and events of successful actions while a pass is still running.

    At most every ``status_every`` seconds (the first time once the pass has run that long), in
    the pass's own thread (the executor hands outcomes over as they complete), so the threads
    that talk to Docker never wait for the database. A failed write is logged and left to the
    end of the pass, which writes whatever was not recorded here.
    """

    def __init__(self, controller: Controller, hashes: Mapping[str, str | None]) -> None:
        self._controller = controller
        self._hashes = hashes
        self._pending: list[executor.Outcome] = []
        self._recorded: set[int] = set()
        self._last = time.monotonic()

    def add(self, outcome: executor.Outcome) -> None:
        name = outcome.name
        if outcome.ok and outcome.phase is not None and name is not None and name in self._hashes:
            self._pending.append(outcome)
        if self._pending and time.monotonic() - self._last >= self._controller._status_every:
            self.flush()

    def recorded(self, outcome: executor.Outcome) -> bool:
        return id(outcome) in self._recorded

    def flush(self) -> None:
        ctl, pending, self._pending = self._controller, self._pending, []
        self._last = time.monotonic()
        assert ctl._status is not None
        rows = [
            statuses.done_row(o, self._hashes[o.name], ctl._status.get(o.name))
            for o in pending
            if o.name is not None
        ]
        upserts = [row for row in rows if ctl._status.get(row.name) != row]
        try:
            ctl._write_status(upserts, (), [_event(o) for o in pending])
        except store_mod.DatabaseError:
            log.debug("cannot write status rows during the pass", exc_info=True)
            return  # the store reported the outage; the end of the pass writes them
        except store_mod.NotLeader:
            return  # the lease was lost: the new leader records what it finds
        except Exception:
            log.warning(
                "cannot write status rows during the pass; writing them at its end", exc_info=True
            )
            return
        self._recorded.update(id(o) for o in pending)


def _message_changed(old: store_mod.StatusRow | None, new: store_mod.StatusRow) -> bool:
    return old is None or old.phase != new.phase or old.message != new.message


_REASONS = {
    planning.Create: "Created",
    planning.Recreate: "Recreated",
    planning.Start: "Started",
    planning.Stop: "Stopped",
    planning.Remove: "Removed",
    planning.Rename: "Renamed",
}


def _event(outcome: executor.Outcome) -> store_mod.Event:
    obj = f"container/{outcome.name}" if outcome.name else f"container/{outcome.container_id}"
    if outcome.ok:
        where = f" on {outcome.node}" if outcome.node else ""
        return store_mod.Event(obj, _REASONS[type(outcome.action)], outcome.message + where)
    return store_mod.Event(obj, "Failed", outcome.message, "Warning")


def load_policy(path: str) -> spec_policy.Policy:
    """The admission policy in the YAML file ``path`` (empty: the baseline); raises
    ``spec.policy.PolicyError`` when the file cannot be read or is not a policy."""
    if not path:
        return spec_policy.BASELINE
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise spec_policy.PolicyError(f"{path}: cannot read the policy file: {e}") from None
    return spec_policy.parse(text, source=path)


def converged(result: PassResult) -> bool:
    """True when the pass found nothing to do."""
    return not result.plan.changes


__all__ = ["Controller", "NodeSource", "PassResult", "converged", "load_policy"]
