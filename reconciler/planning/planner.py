"""The pure planner: (desired rows, node snapshots, now) → a ``Plan``.

Where this sits in a pass: ``controller`` loads ``DesiredContainer`` rows and each node's
``NodeSnapshot``, calls ``plan``, hands ``Plan.actions`` to ``executor`` (the only place that
touches Docker) and records ``Plan.statuses`` for the rows that need no action. No I/O, no clock,
no randomness: the same inputs always give the same plan. The rules, one small function each:

- Only containers labelled ``reconciler.managed=true`` exist here; others are invisible (read
  only to avoid a docker name clash on create).
- One container per desired name. The *kept* one is the first of: on a healthy refreshed node,
  on the pinned node, running, matching spec hash, **oldest** (a crash mid-create leaves a newer
  duplicate, so the choice never flips), lowest id. The rest are removed where their node is
  healthy (``duplicate``).
- Only healthy, refreshed nodes are acted on. A container on any other node keeps its place,
  phase ``unknown``, no action; nothing there is removed.
- Spec drift (``reconciler.spec-hash``), a dead container or a caller-marked stale task →
  ``Recreate`` in place. ``running`` → ``Start`` an exited/created one; ``stopped`` → ``Stop`` a
  running one, ``Create(start=False)`` when absent.
- Pinned rows go to their node only (a container elsewhere is ``replaced``, only when both nodes
  are healthy). Others spread over healthy, refreshed, schedulable nodes: fewest managed
  containers first, counting this pass's placements; then nodes that have the image (a row with
  ``pull: never`` goes only there; others are pulled where they land); ties by node name, rows
  in name order. Cordoned nodes keep what they run.
- A row backing off (``RowBackoff.holds``) that needs work → ``Blocked`` with its last message.
- Crash loops: a running row's container that exited after the last pass saw it running (its
  previous status row) is not started at once: ``Blocked`` (phase ``failed``,
  ``back-off 16s restarting (exit 1, 5 restarts)``) with a new ``Plan.backoffs`` entry, delays
  1, 2, 4 … 60 s; the streak is forgotten after 10 minutes of running or a spec change.
- A row with no observed container whose previous status row puts its container on a node whose
  picture is unknown (pending, not refreshed, unhealthy) stays there: phase ``unknown``, same
  node and container, no copy elsewhere, until that node is observed again.
- A node flagged as a duplicate of another (``NodeSnapshot.duplicate_of``: the same engine under
  a second name) is ignored: no placements, and its containers are left to the original node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import NamedTuple

from reconciler.domain import (
    NAME_LABEL,
    SPEC_HASH_LABEL,
    ContainerId,
    ContainerSpec,
    DesiredContainer,
    DesiredState,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    Phase,
    PortBinding,
    PullPolicy,
    Reschedule,
    StatusRow,
)
from reconciler.planning import backoff as backoff_policy
from reconciler.planning import lifecycle, placement
from reconciler.planning.actions import (
    Action,
    Blocked,
    Create,
    Plan,
    Recreate,
    RecreateReason,
    Remove,
    RemoveReason,
    Rename,
    RowStatus,
    Start,
    Stop,
)
from reconciler.planning.backoff import RowBackoff

__all__ = ["plan"]


class _RowPlan(NamedTuple):
    """One row's share of the plan."""

    actions: tuple[Action, ...]
    status: RowStatus | None
    #: The node the row's container lives on after this plan (it counts towards its load).
    node: NodeName | None
    #: The container the row keeps, if it has one.
    kept: ObservedContainer | None = None
    #: A crash-loop backoff this plan starts or advances for the row.
    backoff: RowBackoff | None = None


class _View(NamedTuple):
    """Read-only facts about the nodes, computed once per pass."""

    nodes: Mapping[NodeName, NodeSnapshot]
    usable: AbstractSet[NodeName]  # healthy and refreshed: its picture can be acted on
    placeable: tuple[NodeName, ...]  # usable and schedulable, sorted by name
    taken: Mapping[NodeName, AbstractSet[str]]  # node → docker names of unmanaged containers
    stale: AbstractSet[ContainerId]
    previous: Mapping[str, StatusRow]  # desired name → its status row as the last pass left it
    now: float
    policy: placement.Policy
    lost: Mapping[NodeName, float]  # node unhealthy for at least the grace → seconds unhealthy
    draining: AbstractSet[NodeName]  # usable nodes with nodes.drain set
    held_ports: Mapping[NodeName, tuple[PortBinding, ...]]  # host ports of unmanaged containers
    unplaceable: tuple[str, ...]  # "n1 cordoned" for every node not placeable, by name


def plan(
    desired: Sequence[DesiredContainer],
    nodes: Mapping[NodeName, NodeSnapshot],
    *,
    now: float,
    backoff: Mapping[str, RowBackoff] | None = None,
    stale_tasks: AbstractSet[ContainerId] = frozenset(),
    previous: Mapping[str, StatusRow] | None = None,
    policy: placement.Policy | None = None,
) -> Plan:
    """Decide what converges ``nodes`` onto ``desired`` at ``now``.

    ``previous`` maps desired names to their status rows as the last pass recorded them (where
    each row's container was last seen, its phase, its failure streak); ``backoff`` maps desired
    names to their failure streak, and defaults to the streaks of ``previous``
    (``backoff_entries``). ``stale_tasks`` are container ids the caller saw fail with a
    stale-task error, to be recreated. Desired names are unique (the table's key); should one
    repeat, the first row wins. Actions come per row in name order, orphan removals last, so
    equal inputs give equal plans whatever their order.
    """
    before = previous or {}
    index, view = _survey(nodes, stale_tasks, before, now, policy or placement.Policy())
    rows = _unique_by_name(desired)
    holds = backoff if backoff is not None else backoff_entries(before)
    # Most rows of an idle pass are settled: their one container already matches them.
    settled = {
        row.name: status
        for row in rows
        if (status := _settled(row, index.get(row.name, ()), view)) is not None
    }
    # Then the rows that have a place (or need none), so that new rows see the whole load.
    planned: dict[str, _RowPlan] = {}
    for row in rows:
        if row.name in settled:
            continue
        found = index.get(row.name, ())
        if not found and row.spec is not None and (held := _held(row, view)) is not None:
            planned[row.name] = held
        elif (found and not _moves(row, found, view)) or row.spec is None:
            planned[row.name] = _hold_back(row, _plan_existing(row, found, view), holds, now)
    usage = _usage(rows, settled, planned, view)
    for row in rows:
        if row.name not in planned and row.name not in settled:
            found = index.get(row.name, ())
            new = _hold_back(row, _place(row, found, view, usage), holds, now)
            planned[row.name] = new
            if new.node is not None and new.node in usage:
                # The only running total of the pass: spreads a batch, never overfills a node.
                usage[new.node].add(row.spec)
    actions = [a for row in rows if row.name in planned for a in planned[row.name].actions]
    actions.extend(_remove_orphans(index, planned.keys() | settled.keys(), view))
    statuses = settled | {name: p.status for name, p in planned.items() if p.status is not None}
    crashed = {name: p.backoff for name, p in planned.items() if p.backoff is not None}
    return Plan(tuple(actions), MappingProxyType(statuses), MappingProxyType(crashed))


def backoff_entries(previous: Mapping[str, StatusRow]) -> dict[str, RowBackoff]:
    """The failure streaks recorded in status rows, as the planner's ``backoff`` input."""
    return {
        name: RowBackoff(row.failures, row.next_attempt_at, row.spec_hash, row.message)
        for name, row in previous.items()
        if row.failures and row.next_attempt_at is not None
    }


def _survey(
    nodes: Mapping[NodeName, NodeSnapshot],
    stale: AbstractSet[ContainerId],
    previous: Mapping[str, StatusRow],
    now: float,
    policy: placement.Policy,
) -> tuple[Mapping[str | None, Sequence[ObservedContainer]], _View]:
    """Managed containers by desired name (None: managed but nameless), and a view of the nodes.

    The only walk over every container of the pass. A duplicate node's containers are not
    indexed: they are the original node's, seen a second time.
    """
    index: dict[str | None, list[ObservedContainer]] = {}
    taken: dict[NodeName, AbstractSet[str]] = {}
    held_ports: dict[NodeName, tuple[PortBinding, ...]] = {}
    for name, node in nodes.items():
        if node.duplicate_of is not None:
            taken[name] = frozenset()
            continue
        unmanaged = []
        ports: list[PortBinding] = []
        for c in node.containers:
            labels = c.labels
            if c.managed:  # labelled, and not by another installation
                index.setdefault(labels.get(NAME_LABEL), []).append(c)
            else:
                unmanaged.append(c.name.lstrip("/"))
                if c.ports and c.running:
                    ports.extend(p for p in c.ports if p.host_port)
        taken[name] = frozenset(unmanaged)
        held_ports[name] = tuple(ports)
    usable = frozenset(n for n, s in nodes.items() if _unavailable(s) is None)
    # A suspect node (stopped answering, not unhealthy yet) keeps its rows but gets no new one.
    placeable = tuple(
        sorted(
            n
            for n in usable
            if nodes[n].schedulable and not nodes[n].suspect and not nodes[n].drain
        )
    )
    lost = {
        n: now - s.unhealthy_since
        for n, s in nodes.items()
        if s.health is Health.UNHEALTHY
        and s.unhealthy_since is not None
        and now - s.unhealthy_since >= policy.node_grace
    }
    draining = frozenset(n for n in usable if nodes[n].drain)
    # Once per pass, not per row: with 1,000 nodes a per-row scan of the placeable tuple was
    # a million comparisons for every row placed (issue 15).
    placeable_set = frozenset(placeable)
    unplaceable = tuple(
        f"{n} {_why_not(nodes[n])}" for n in sorted(nodes) if n not in placeable_set
    )
    view = _View(
        nodes,
        usable,
        placeable,
        taken,
        stale,
        previous,
        now,
        policy,
        lost,
        draining,
        held_ports,
        unplaceable,
    )
    return index, view


def _unique_by_name(desired: Sequence[DesiredContainer]) -> tuple[DesiredContainer, ...]:
    first: dict[str, DesiredContainer] = {}
    for row in desired:
        first.setdefault(row.name, row)
    return tuple(first[name] for name in sorted(first))


def _unavailable(node: NodeSnapshot) -> tuple[Phase, str, str] | None:
    """None when ``node``'s picture can be acted on; else (phase, message, short cause)."""
    if node.duplicate_of is not None:
        message = f"node {node.name} is the same engine as node {node.duplicate_of}"
        return Phase.UNSCHEDULABLE, message, f"{node.name} duplicate"
    if node.health is Health.UNHEALTHY:
        return Phase.UNKNOWN, f"node {node.name} is unhealthy", f"{node.name} unhealthy"
    if node.health is Health.PENDING:
        return Phase.PENDING, f"node {node.name} has not been reached yet", f"{node.name} pending"
    if not node.refreshed:
        message = f"node {node.name} has not been refreshed yet"
        return Phase.PENDING, message, f"{node.name} not refreshed"
    return None


def _blocked(
    row: DesiredContainer, phase: Phase, reason: str, cause: str, kept: ObservedContainer | None
) -> _RowPlan:
    """Nothing for ``row`` this pass; the container it keeps, if any, stays as it is."""
    if kept is None:
        return _RowPlan((Blocked(row.name, phase, reason, cause),), None, None)
    blocked = Blocked(row.name, phase, reason, cause, kept.node, kept.id)
    return _RowPlan((blocked,), None, kept.node, kept)


def _hold_back(
    row: DesiredContainer, row_plan: _RowPlan, holds: Mapping[str, RowBackoff], now: float
) -> _RowPlan:
    """A row that is backing off keeps its container as it is, whatever it needed."""
    entry = holds.get(row.name)
    if entry is None or not entry.holds(now=now, spec_hash=row.spec_hash):
        return row_plan
    if all(isinstance(a, Blocked) for a in row_plan.actions):
        return row_plan  # nothing would be attempted anyway; keep the more precise reason
    message = entry.message or f"backing off after {entry.failures} failures"
    return _blocked(row, Phase.FAILED, message, "backing off", row_plan.kept)


def _plan_existing(
    row: DesiredContainer, found: Sequence[ObservedContainer], view: _View
) -> _RowPlan:
    """A row that is malformed, pinned, or already has containers: one kept, the rest removed."""
    kept = _keeper(found, row, view) if found else None
    decided = _decide(row, kept, view)
    if len(found) <= 1:
        return decided
    duplicates = _others(found, kept, view, RemoveReason.DUPLICATE)
    # A rename waits for the next pass: the duplicate being removed may still hold the name.
    actions = tuple(a for a in decided.actions if not isinstance(a, Rename))
    return decided._replace(actions=(*duplicates, *actions))


def _decide(
    row: DesiredContainer,
    kept: ObservedContainer | None,
    view: _View,
    usage: Mapping[NodeName, placement.Usage] | None = None,
) -> _RowPlan:
    """What the row needs, given the one container it keeps (if any)."""
    if row.spec is None or row.spec_hash is None:
        return _blocked(row, Phase.FAILED, row.error or "invalid row", "invalid row", kept)
    pinned = row.node
    if kept is not None and (pinned in (None, kept.node) or kept.node not in view.usable):
        return _keep(row, kept, view)  # unpinned, on its node, or not movable yet: it stays
    assert pinned is not None, "new unpinned rows are placed by _place"
    target = view.nodes.get(pinned)
    if target is None:
        reason = f"node '{pinned}' is not registered"
        return _blocked(row, Phase.UNSCHEDULABLE, reason, reason, kept)
    unavailable = _unavailable(target)
    if unavailable is not None:
        return _blocked(row, Phase.PENDING, *unavailable[1:], kept)
    if not target.schedulable or target.drain:
        reason = f"node {pinned} is {'draining' if target.drain else 'cordoned'}"
        return _blocked(row, Phase.UNSCHEDULABLE, reason, f"{pinned} cordoned", kept)
    return _create(row, [pinned], view, replacing=kept, usage=usage)


def _keeper(
    found: Sequence[ObservedContainer], row: DesiredContainer, view: _View
) -> ObservedContainer:
    """The container a row keeps among ``found`` (non-empty); see the module docstring."""
    if len(found) == 1:
        return found[0]

    old = view.previous.get(row.name)
    placed = old.container_id if old is not None else None

    def rank(c: ObservedContainer) -> tuple[bool, bool, bool, bool, bool, bool, float, str]:
        return (
            c.node not in view.usable,
            row.node is not None and c.node != row.node,
            not c.running,
            row.node is None and c.node in view.draining,
            # Where the row is placed now (its status row): a copy left on a node that was
            # lost and came back is removed, whatever its age.
            c.id != placed,
            c.spec_hash != row.spec_hash,
            c.created if c.created is not None else float("inf"),
            c.id,
        )

    return min(found, key=rank)


def _others(
    found: Sequence[ObservedContainer],
    kept: ObservedContainer | None,
    view: _View,
    reason: RemoveReason,
) -> tuple[Remove, ...]:
    """Remove every container of ``found`` but ``kept`` whose node can be acted on."""
    return tuple(
        Remove(c.node, c.id, c.labels.get(NAME_LABEL), reason)
        for c in sorted(found, key=lambda c: (c.node, c.id))
        if c is not kept and c.node in view.usable
    )


def _keep(row: DesiredContainer, kept: ObservedContainer, view: _View) -> _RowPlan:
    """Converge the kept container in place (its node may be cordoned), if its node is usable."""
    unavailable = _unavailable(view.nodes[kept.node])
    if unavailable is None:
        return _converge(row, kept, view)
    moving = f"; the row is pinned to {row.node}" if row.node not in (None, kept.node) else ""
    moving += _not_moved(row, kept.node, view)
    status = RowStatus(Phase.UNKNOWN, kept.node, kept.id, unavailable[1] + moving)
    return _RowPlan((), status, kept.node, kept)


def _not_moved(row: DesiredContainer, node: NodeName, view: _View) -> str:
    """Why a row on lost node ``node`` stays there (empty when it is not lost)."""
    if node not in view.lost:
        return ""
    seconds = f"{view.lost[node]:.0f} s"
    if row.node is not None:
        return f" for {seconds}; not rescheduled: the row is pinned to {row.node}"
    if row.reschedule is Reschedule.NEVER:
        return f" for {seconds}; not rescheduled: reschedule is 'never'"
    return ""


def _movable(row: DesiredContainer) -> bool:
    return row.node is None and row.reschedule is Reschedule.ON_NODE_FAILURE


def _moves(row: DesiredContainer, found: Sequence[ObservedContainer], view: _View) -> bool:
    """Should a row with containers be placed anew? When all of them are on a lost node (it is
    rescheduled), or on draining nodes (a replacement starts before the original goes)."""
    if row.node is not None:
        return False
    if all(c.node in view.draining for c in found):
        return True
    return (
        _movable(row)
        and all(c.node not in view.usable for c in found)
        and any(c.node in view.lost for c in found)
    )


def _note(row: DesiredContainer, found: Sequence[ObservedContainer], view: _View) -> str:
    """Why a row that had a place is being placed again, for its status row and event."""
    old = view.previous.get(row.name)
    was = found[0].node if found else (old.node if old and old.container_id else None)
    if was is None:
        return ""
    if was in view.lost:
        return f"rescheduled from {was} (unhealthy for {view.lost[was]:.0f} s)"
    if was in view.draining:
        return f"moved off draining node {was}"
    if was not in view.nodes:
        return f"rescheduled from {was} (node removed)"
    return ""


def _usage(
    rows: Sequence[DesiredContainer],
    settled: Mapping[str, RowStatus],
    planned: Mapping[str, _RowPlan],
    view: _View,
) -> dict[NodeName, placement.Usage]:
    """Each node's load before new rows are placed: the rows kept there, unmanaged ports."""
    usage = {n: placement.Usage(ports=list(view.held_ports.get(n, ()))) for n in view.nodes}
    specs = {row.name: row.spec for row in rows}
    for name, node in [(n, s.node) for n, s in settled.items()] + [
        (n, p.node) for n, p in planned.items()
    ]:
        if node is not None and node in usage:
            usage[node].add(specs.get(name))
    return usage


#: Per desired state: the container states that already satisfy it, and the phase to report.
#: (A table read once, because reading an Enum member costs ~0.3 µs on 3.11, on every row.)
_SETTLED = (
    (DesiredState.RUNNING, frozenset({"running", "restarting"}), Phase.RUNNING),
    (DesiredState.STOPPED, frozenset({"created", "exited"}), Phase.STOPPED),
)


def _settled(
    row: DesiredContainer, found: Sequence[ObservedContainer], view: _View
) -> RowStatus | None:
    """The status of a row whose one container already matches it; None if it needs a look.

    The fast path of an idle pass, and the first check of ``_converge``.
    """
    if len(found) != 1 or row.spec_hash is None:
        return None
    c = found[0]
    if c.node not in view.usable or row.node not in (None, c.node) or c.id in view.stale:
        return None
    if row.node is None and c.node in view.draining:
        return None  # to be moved off its node
    if c.labels.get(SPEC_HASH_LABEL) != row.spec_hash:
        return None
    docker_name = c.name.lstrip("/")
    if docker_name != row.name and (row.spec is None or docker_name != row.spec.container_name):
        return None  # a start-first update's new container, still to be renamed
    for desired_state, satisfied_by, phase in _SETTLED:
        if row.state is desired_state:
            if c.state not in satisfied_by or c.health == "unhealthy":
                return None
            return RowStatus(phase, c.node, c.id, _moved_note(row.name, c, view))
    return None


def _moved_note(name: str, c: ObservedContainer, view: _View) -> str:
    """``rescheduled from n3 (unhealthy for 31 s)`` while the row keeps the container its
    rescheduling created (the note its create recorded); empty otherwise."""
    old = view.previous.get(name)
    if old is None or old.container_id != c.id or not old.message:
        return ""
    _, found, note = old.message.partition("rescheduled from ")
    return found + note


def _converge(row: DesiredContainer, c: ObservedContainer, view: _View) -> _RowPlan:
    """What the row's container on a usable node needs to match the row."""
    assert row.spec is not None and row.spec_hash is not None
    settled = _settled(row, (c,), view)
    if settled is not None:
        return _RowPlan((), settled, c.node, c)
    start = row.state is DesiredState.RUNNING
    reason = _recreate_reason(row, c, view)
    if reason is not None:
        unfit = _unfit(row.spec, [c.node], view, check_name=False)
        if unfit is not None:
            # Keep the old container rather than remove it for one that cannot be created.
            return _blocked(row, Phase.FAILED, *unfit, c)
        if reason is RecreateReason.SPEC_CHANGED and row.spec.container_name and c.running:
            # Start-first: the new container starts beside the old one, under its own name.
            create = Create(row.name, c.node, row.spec, row.spec_hash, start)
            return _RowPlan((create,), None, c.node, c)
        recreate = Recreate(row.name, c.node, c.id, row.spec, row.spec_hash, reason, start)
        return _RowPlan((recreate,), None, c.node, c)
    wanted_name = row.spec.container_name or row.name
    if c.name.lstrip("/") != wanted_name:
        return _RowPlan((Rename(row.name, c.node, c.id, wanted_name),), None, c.node, c)
    if start and (done := lifecycle.exited_for_good(row, c)) is not None:
        return _RowPlan((), done, c.node, c)  # its restart policy leaves it exited
    if start and lifecycle.unhealthy(c):
        unhealthy = RecreateReason.UNHEALTHY
        replacement = Recreate(row.name, c.node, c.id, row.spec, row.spec_hash, unhealthy, start)
        return _crashed(row, c, view) or _RowPlan((replacement,), None, c.node, c)
    if start and c.state in ("created", "exited", "stopped"):
        return _crashed(row, c, view) or _RowPlan((Start(row.name, c.node, c.id),), None, c.node, c)
    if not start and c.state in ("running", "restarting", "paused"):
        return _RowPlan((Stop(row.name, c.node, c.id, row.spec.stop_timeout),), None, c.node, c)
    # paused, removing, or a state this version does not know: report it, touch nothing.
    status = RowStatus(Phase.PENDING, c.node, c.id, f"container is {c.state}")
    return _RowPlan((), status, c.node, c)


def _recreate_reason(
    row: DesiredContainer, c: ObservedContainer, view: _View
) -> RecreateReason | None:
    if c.id in view.stale:
        return RecreateReason.STALE_TASK
    if c.labels.get(SPEC_HASH_LABEL) != row.spec_hash:
        return RecreateReason.SPEC_CHANGED
    if c.state == "dead":
        return RecreateReason.DEAD
    return None


def _crashed(row: DesiredContainer, c: ObservedContainer, view: _View) -> _RowPlan | None:
    """Back off instead of starting ``c`` when it exited since the last pass saw it running.

    The streak grows by one per exit; it starts again after ``CRASH_RESET_AFTER`` seconds of
    running since the last restart, or with a new spec. None: start it now (first sight, or its
    back-off is over: ``_hold_back`` holds it until then).
    """
    old = view.previous.get(row.name)
    crashed = c.state == "exited" or lifecycle.unhealthy(c)
    if not crashed or old is None or old.phase is not Phase.RUNNING:
        return None
    if old.container_id != c.id:
        return None  # the status row is about another container: nothing to count
    streak = old.failures if old.spec_hash == row.spec_hash else 0
    if old.next_attempt_at is not None and view.now >= (
        old.next_attempt_at + backoff_policy.CRASH_RESET_AFTER
    ):
        streak = 0  # it ran long enough since its last restart
    restarts = streak + 1
    delay = backoff_policy.crash_delay(restarts)
    message = lifecycle.backoff_message(delay=delay, c=c, restarts=restarts)
    entry = RowBackoff(restarts, view.now + delay, row.spec_hash, message)
    blocked = Blocked(row.name, Phase.FAILED, message, "crash loop", c.node, c.id)
    return _RowPlan((blocked,), None, c.node, c, entry)


def _held(row: DesiredContainer, view: _View) -> _RowPlan | None:
    """Hold a row without an observed container where its status row last saw one.

    When that node's picture is unknown (never reached, reconnecting, unhealthy without a
    picture), the container may well still run there: placing the row elsewhere would run it
    twice. None when the row is free to be placed (no previous container, its node is gone from
    the table, or its node is observed and the container really is not there).
    """
    old = view.previous.get(row.name)
    if old is None or old.node is None or old.container_id is None:
        return None
    snapshot = view.nodes.get(old.node)
    if snapshot is None or snapshot.duplicate_of is not None:
        return None
    unavailable = _unavailable(snapshot)
    if unavailable is None:
        return None
    if old.node in view.lost and _movable(row):
        return None  # lost: rescheduled
    moving = f"; the row is pinned to {row.node}" if row.node not in (None, old.node) else ""
    moving += _not_moved(row, old.node, view)
    status = RowStatus(Phase.UNKNOWN, old.node, old.container_id, unavailable[1] + moving)
    return _RowPlan((), status, old.node)


def _unfit(
    spec: ContainerSpec, candidates: Sequence[NodeName], view: _View, *, check_name: bool = True
) -> tuple[str, str] | None:
    """(message, cause) when none of ``candidates`` can take ``spec``; None when one can."""
    # Only a row that may not pull needs its image on the node; others are pulled there.
    missing = [
        n
        for n in candidates
        if spec.pull is PullPolicy.NEVER and not view.nodes[n].has_image(spec.image)
    ]
    clashing = [
        n for n in candidates if check_name and n not in missing and spec.name in view.taken[n]
    ]
    if len(missing) + len(clashing) < len(candidates):
        return None
    parts = [f"image {spec.image} not found on {_nodes_phrase(missing)}"] if missing else []
    if clashing:
        parts.append(
            f"name '{spec.name}' is taken by a container reconciler does not manage"
            f" on {_nodes_phrase(clashing)}"
        )
    return "; ".join(parts), ("image missing" if missing else "name taken")


def _nodes_phrase(names: Sequence[NodeName]) -> str:
    return f"node {names[0]}" if len(names) == 1 else "nodes " + ", ".join(sorted(names))


def _create(
    row: DesiredContainer,
    candidates: Sequence[NodeName],
    view: _View,
    *,
    replacing: ObservedContainer | None = None,
    usage: Mapping[NodeName, placement.Usage] | None = None,
    excluded: Sequence[str] = (),
    note: str = "",
) -> _RowPlan:
    """Create the row on the node of ``candidates`` the strategy picks among those that can
    take it (constraints, reservations, host ports, then image and name).

    ``replacing`` (on another node) is removed at the same time, and only if a candidate fits.
    Without ``usage`` (a pinned row moving between nodes) reservations are not checked.
    ``excluded`` are the reasons other nodes were left out (``"n1 cordoned"``), for the message.
    """
    assert row.spec is not None and row.spec_hash is not None
    if usage is not None:
        reasons = list(excluded)
        allowed = []
        for n in candidates:
            why = placement.exclusion(row, view.nodes[n], usage[n], view.policy)
            if why is None:
                allowed.append(n)
            else:
                reasons.append(f"{n} {why}")
        if not allowed:
            reason = "no node fits: " + "; ".join(sorted(reasons))
            return _blocked(row, Phase.UNSCHEDULABLE, reason, "no node fits", replacing)
        candidates = allowed
    fits = [n for n in candidates if _unfit(row.spec, [n], view) is None]
    if not fits:
        unfit = _unfit(row.spec, candidates, view)
        assert unfit is not None
        return _blocked(row, Phase.FAILED, *unfit, replacing)
    # Among equally loaded nodes, one that already has the image is preferred.
    image = row.spec.image
    with_image = frozenset(n for n in fits if view.nodes[n].has_image(image))
    node = placement.choose(fits, view.nodes, usage or {}, view.policy.strategy, with_image)
    start = row.state is DesiredState.RUNNING
    create = Create(row.name, node, row.spec, row.spec_hash, start, note)
    before = _others([replacing] if replacing else [], None, view, RemoveReason.REPLACED)
    return _RowPlan((*before, create), None, node)


def _place(
    row: DesiredContainer,
    found: Sequence[ObservedContainer],
    view: _View,
    usage: Mapping[NodeName, placement.Usage],
) -> _RowPlan:
    """Place a row that has no place (new, rescheduled, or moving off a draining node) on a
    healthy, refreshed, schedulable node that fits; a pinned row on its node."""
    if row.node is not None:
        return _decide(row, None, view, usage)
    note = _note(row, found, view)
    if view.placeable:
        planned = _create(
            row, view.placeable, view, usage=usage, excluded=view.unplaceable, note=note
        )
        if found and not any(isinstance(a, Create) for a in planned.actions):
            # Moving off a draining node and no node fits: it stays where it is.
            return _plan_existing(row, found, view)
        return planned
    if found:
        return _plan_existing(row, found, view)
    why = [
        (_unavailable(view.nodes[n]) or ("", "", _unplaceable(view.nodes[n])))[2]
        for n in sorted(view.nodes)
    ]
    reason = f"no healthy schedulable node ({', '.join(why) or 'no nodes registered'})"
    return _blocked(row, Phase.UNSCHEDULABLE, reason, "no schedulable node", None)


def _why_not(node: NodeSnapshot) -> str:
    """Why a node takes no new row (it is not in ``_View.placeable``), in a word or two."""
    unavailable = _unavailable(node)
    if unavailable is not None:
        return unavailable[2].removeprefix(f"{node.name} ")
    if node.drain:
        return "draining"
    return "not answering" if node.suspect else "cordoned"


def _unplaceable(node: NodeSnapshot) -> str:
    if node.drain:
        return f"{node.name} draining"
    return f"{node.name} not answering" if node.suspect else f"{node.name} cordoned"


def _remove_orphans(
    index: Mapping[str | None, Sequence[ObservedContainer]],
    names: AbstractSet[str],
    view: _View,
) -> tuple[Remove, ...]:
    """Managed containers no row claims, on nodes that can be acted on."""
    orphans = [c for name, found in index.items() if name not in names for c in found]
    return _others(orphans, None, view, RemoveReason.ORPHAN)
