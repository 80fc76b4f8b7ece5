"""PURE: services → slot rows, and the rolling update's state machine.

Where this sits in a pass: before the planner. ``runtime.services`` loads the ``services`` rows
(``ServiceDef``), the ``service_status`` rows (``ServiceState``, controller-owned) and the node
snapshots, and calls :func:`expand`; it returns one ``DesiredContainer`` per slot,
``<service>.<slot>`` (slot 1 … replicas), which the planner treats like any other row, and each
service's next state, which the runtime writes before anything is acted on. No I/O, no clock.

The rules:

- A slot's spec is the service's *target* spec (``ServiceState.spec``) or its *previous* one
  (``ServiceState.previous``). Identity and drift come from the labels, as for plain rows:
  ``reconciler.name=<service>.<slot>`` and the spec hash. Scaling down drops the highest slots'
  rows: the planner removes their containers as orphans.
- A new spec hash in the ``services`` row starts an update (``updating``): the old target
  becomes ``previous``. Changing only ``replicas`` or ``update_*`` rolls nothing.
- While updating, a slot is *updated* when one of its containers carries the target hash, and
  *stable* when that container has run (healthy, if it has a health check) for
  ``update_monitor_seconds``. When every updated slot is stable and ``update_delay_seconds``
  have passed since the last became stable, the next ``update_parallelism`` slots (0: all),
  lowest first, get the target spec. Slots without a container get the target at once.
- A failure of an updated slot (its container exited or is unhealthy, or its status row is
  ``failed`` for the target spec: a create error, a crash-loop back-off) applies
  ``update_failure_action``: ``pause`` (the slots not updated keep the previous spec),
  ``continue`` (go on), ``rollback`` (target and previous swap: ``rollback_started``, rolled
  back with the same batches; a failure then pauses it, ``rollback_paused``, never rolling back
  a rollback). All slots updated and stable: ``completed`` / ``rollback_completed``.
- After a rollback the ``services`` row still holds the spec that failed; the service stays
  rolled back until the row changes again.
- ``update_order = start-first``: a slot picked for the batch keeps its old container while the
  new one is created under a temporary name (``<service>.<slot>.next-<hash8>``); once the new
  one runs, the planner removes the old one and renames the new one (``Rename``).
- A plain row named like a slot is a conflict: both become invalid rows (the planner keeps
  whatever container carries the name, touches nothing) and both statuses say so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from reconciler.domain import (
    NAME_LABEL,
    SERVICE_LABEL,
    SPEC_HASH_LABEL,
    DesiredContainer,
    DesiredState,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    Phase,
    ServiceDef,
    ServiceState,
    StatusRow,
    UpdateFailureAction,
    UpdateOrder,
    UpdateState,
)

__all__ = ["Expansion", "expand", "merge", "slot_name", "temporary_name"]

_ROLLBACK = frozenset(
    {UpdateState.ROLLBACK_STARTED, UpdateState.ROLLBACK_COMPLETED, UpdateState.ROLLBACK_PAUSED}
)
_MOVING = frozenset({UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED})


def slot_name(service: str, slot: int) -> str:
    return f"{service}.{slot}"


def temporary_name(service: str, slot: int, spec_hash: str) -> str:
    """The Docker name of a start-first update's new container until the old one is gone."""
    return f"{slot_name(service, slot)}.next-{spec_hash[:8]}"


class Expansion(NamedTuple):
    """What :func:`expand` decided: the slot rows and each service's next state."""

    rows: tuple[DesiredContainer, ...]
    states: Mapping[str, ServiceState]
    #: When an update may take its next step (a monitor window or a delay ends): the caller
    #: runs a pass then. None when no update waits on time.
    due: float | None = None


class _Slot(NamedTuple):
    """One slot as this pass sees it."""

    number: int
    containers: tuple[ObservedContainer, ...]
    status: StatusRow | None


def expand(
    services: Sequence[ServiceDef],
    states: Mapping[str, ServiceState],
    nodes: Mapping[NodeName, NodeSnapshot],
    previous: Mapping[str, StatusRow],
    *,
    now: float,
) -> Expansion:
    """The slot rows of every service and each service's next state (see the module doc)."""
    by_name = _slot_containers(nodes)
    rows: list[DesiredContainer] = []
    next_states: dict[str, ServiceState] = {}
    due: list[float] = []
    for svc in sorted({s.name: s for s in reversed(services)}.values(), key=lambda s: s.name):
        state = _adopt(svc, states.get(svc.name))
        if state.spec is None:  # a malformed row and nothing kept: hold what runs, if anything
            rows += _broken_slots(svc, by_name)
            next_states[svc.name] = dataclasses.replace(state, message=svc.error or "invalid")
            continue
        replicas = svc.replicas if svc.spec is not None else state.replicas_desired
        slots = [
            _Slot(
                i,
                tuple(by_name.get(slot_name(svc.name, i), ())),
                previous.get(slot_name(svc.name, i)),
            )
            for i in range(1, replicas + 1)
        ]
        state, chosen = _advance(svc, state, slots, now=now)
        if svc.error is not None:
            state = dataclasses.replace(
                state, message=f"invalid service row, kept as it was: {svc.error}"
            )
        rows += _slot_rows(svc, state, slots, chosen)
        due += _due(svc, state, slots, now=now)
        next_states[svc.name] = _counted(state, slots, replicas)
    return Expansion(tuple(rows), next_states, min(due, default=None))


def merge(
    plain: Sequence[DesiredContainer], expansion: Expansion
) -> tuple[list[DesiredContainer], dict[str, str]]:
    """Plain rows and slot rows together; a name in both is a conflict reported on both.

    Returns the rows and, per service with a conflict, the words for its status message.
    """
    slot_names = {row.name: row for row in expansion.rows}
    clashes = sorted(name for name in (row.name for row in plain) if name in slot_names)
    if not clashes:
        return [*plain, *expansion.rows], {}
    clashing = set(clashes)
    merged = [row for row in plain if row.name not in clashing]
    merged += [row for row in expansion.rows if row.name not in clashing]
    messages: dict[str, str] = {}
    for name in clashes:
        slot_spec = slot_names[name].spec
        service = slot_spec.service if slot_spec is not None else None
        error = (
            f"conflict: a desired_containers row and slot {name.rsplit('.', 1)[-1]} of service "
            f"{service} share the name {name}; rename the row"
        )
        merged.append(DesiredContainer(name, DesiredState.RUNNING, None, None, None, error))
        if service is not None:
            messages[service] = error
    return merged, messages


# -- the state machine ---------------------------------------------------------------------


def _adopt(svc: ServiceDef, state: ServiceState | None) -> ServiceState:
    """The state with ``svc``'s spec taken in: a new hash starts an update."""
    if svc.spec is None:
        return state or ServiceState(svc.name)
    if state is None or state.spec is None:
        return ServiceState(svc.name, spec=svc)
    if svc.spec_hash == state.spec.spec_hash:
        return dataclasses.replace(state, spec=svc)  # same shape: other fields taken as they are
    if (
        state.update_state in _ROLLBACK
        and state.previous is not None
        and svc.spec_hash == state.previous.spec_hash
    ):
        return state  # the row still holds the spec that was rolled back: stay rolled back
    return ServiceState(
        svc.name,
        UpdateState.UPDATING,
        message=f"updating to spec {_short(svc.spec_hash)}",
        spec=svc,
        previous=state.spec,
    )


def _advance(
    svc: ServiceDef, state: ServiceState, slots: Sequence[_Slot], *, now: float
) -> tuple[ServiceState, Mapping[int, ServiceDef]]:
    """The state after this pass and which spec each slot gets."""
    target, before = state.spec, state.previous
    assert target is not None
    if state.update_state not in _MOVING or before is None:
        return state, _settled_choice(state, slots)
    config = svc.update
    updated = [s for s in slots if not s.containers or _with_hash(s, target.spec_hash)]
    failed = [s for s in updated if _failure(s, target.spec_hash) is not None]
    rolling_back = state.update_state is UpdateState.ROLLBACK_STARTED
    if failed and (rolling_back or config.failure_action is not UpdateFailureAction.CONTINUE):
        first = failed[0]
        why = f"slot {first.number} failed: {_failure(first, target.spec_hash)}"
        if rolling_back:
            paused = UpdateState.ROLLBACK_PAUSED
            return _paused(state, paused, f"rollback paused: {why}"), _settled_choice(
                dataclasses.replace(state, update_state=paused), slots
            )
        if config.failure_action is UpdateFailureAction.ROLLBACK:
            back = ServiceState(
                svc.name,
                UpdateState.ROLLBACK_STARTED,
                message=f"rollback started: {why}",
                spec=before,
                previous=target,
            )
            return _advance(svc, back, slots, now=now)
        paused_state = _paused(state, UpdateState.PAUSED, f"update paused: {why}")
        return paused_state, _settled_choice(paused_state, slots)
    done = {s.number for s in updated}
    monitor = config.monitor_seconds
    stable = {
        s.number: t
        for s in updated
        if s.containers and (t := _stable_since(s, target.spec_hash, monitor, now)) is not None
    }
    # Not stable yet, and not failed (a failure that "continue" lets pass counts as done).
    inflight = [
        s
        for s in updated
        if s.containers and s.number not in stable and _failure(s, target.spec_hash) is None
    ]
    if not inflight:
        remaining = [s.number for s in slots if s.number not in done]
        if not remaining:
            finished = UpdateState.ROLLBACK_COMPLETED if rolling_back else UpdateState.COMPLETED
            words = "update completed"
            if rolling_back:  # keep the reason the update was rolled back
                why = state.message.removeprefix("rollback started: ")
                words = "rollback completed" + (f" ({why})" if why else "")
            state = dataclasses.replace(state, update_state=finished, message=words)
            return state, {s.number: target for s in slots}
        if not stable or now >= max(stable.values()) + config.delay_seconds:
            size = config.parallelism or len(remaining)
            done |= set(remaining[:size])
    choice = {s.number: (target if s.number in done else before) for s in slots}
    return state, choice


def _due(
    svc: ServiceDef, state: ServiceState, slots: Sequence[_Slot], *, now: float
) -> list[float]:
    """The times after ``now`` at which this update's next step may come."""
    if state.update_state not in _MOVING or state.spec is None:
        return []
    monitor, ends = svc.update.monitor_seconds, []
    for s in slots:
        c = _with_hash(s, state.spec.spec_hash)
        if c is not None and c.running and c.created is not None:
            ends.append(c.created + monitor)
    times = [t for t in ends if t > now]
    if ends and svc.update.delay_seconds:
        times.append(max(ends) + svc.update.delay_seconds)
    return [t for t in times if t > now]


def _paused(state: ServiceState, update_state: UpdateState, message: str) -> ServiceState:
    return dataclasses.replace(state, update_state=update_state, message=message)


def _settled_choice(state: ServiceState, slots: Sequence[_Slot]) -> dict[int, ServiceDef]:
    """Completed: every slot on the target. Paused: updated slots keep it, others (and empty
    slots) keep the previous spec."""
    target = state.spec
    assert target is not None
    if state.update_state not in (UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED):
        return {s.number: target for s in slots}
    before = state.previous or target
    return {s.number: (target if _with_hash(s, target.spec_hash) else before) for s in slots}


def _with_hash(slot: _Slot, spec_hash: str | None) -> ObservedContainer | None:
    """The slot's container with ``spec_hash``, running ones first."""
    found = [c for c in slot.containers if c.labels.get(SPEC_HASH_LABEL) == spec_hash]
    return min(found, key=lambda c: (not c.running, c.id), default=None)


def _failure(slot: _Slot, spec_hash: str | None) -> str | None:
    """Why the slot's container of ``spec_hash`` counts as a failed update, if it does."""
    status = slot.status
    if status is not None and status.phase is Phase.FAILED and status.spec_hash == spec_hash:
        return status.message or "failed"
    c = _with_hash(slot, spec_hash)
    if c is None:
        return None
    if c.state in ("exited", "dead"):
        return f"container exited with code {c.exit_code}"
    if c.health == "unhealthy":
        return "container is unhealthy"
    return None


def _stable_since(slot: _Slot, spec_hash: str | None, monitor: float, now: float) -> float | None:
    """When the slot's new container became stable (ran ``monitor`` s, healthy if checked);
    None while it is not (yet): still starting, not running, or beside an old one that runs
    (start-first)."""
    c = _with_hash(slot, spec_hash)
    if c is None or not c.running or c.health in ("starting", "unhealthy"):
        return None
    if sum(1 for x in slot.containers if x.running) > 1:
        return None
    since = (c.created if c.created is not None else now) + monitor
    return since if since <= now else None


# -- rows ----------------------------------------------------------------------------------


def _slot_rows(
    svc: ServiceDef,
    state: ServiceState,
    slots: Sequence[_Slot],
    chosen: Mapping[int, ServiceDef],
) -> list[DesiredContainer]:
    rows = []
    for s in slots:
        source = chosen[s.number]
        assert source.spec is not None and source.spec_hash is not None
        name = slot_name(svc.name, s.number)
        spec = dataclasses.replace(source.spec, name=name, service=svc.name, slot=s.number)
        old_running = [
            c
            for c in s.containers
            if c.running and c.labels.get(SPEC_HASH_LABEL) != source.spec_hash
        ]
        if (
            svc.update.order is UpdateOrder.START_FIRST
            and state.update_state in _MOVING
            and old_running
            and _with_hash(s, source.spec_hash) is None
        ):
            container_name = temporary_name(svc.name, s.number, source.spec_hash)
            spec = dataclasses.replace(spec, container_name=container_name)
        rows.append(DesiredContainer(name, DesiredState.RUNNING, None, spec, source.spec_hash))
    return rows


def _broken_slots(
    svc: ServiceDef, by_name: Mapping[str, Sequence[ObservedContainer]]
) -> list[DesiredContainer]:
    prefix = f"{svc.name}."
    names = sorted(n for n in by_name if n.startswith(prefix) and n[len(prefix) :].isdigit())
    error = f"service {svc.name}: {svc.error or 'invalid'}"
    return [DesiredContainer(n, DesiredState.RUNNING, None, None, None, error) for n in names]


def _counted(state: ServiceState, slots: Sequence[_Slot], replicas: int) -> ServiceState:
    target = state.spec.spec_hash if state.spec is not None else None
    running = sum(1 for s in slots if any(c.running for c in s.containers))
    updated = sum(1 for s in slots if (c := _with_hash(s, target)) is not None and c.running)
    return dataclasses.replace(
        state, replicas_desired=replicas, replicas_running=running, replicas_updated=updated
    )


def _slot_containers(
    nodes: Mapping[NodeName, NodeSnapshot],
) -> dict[str, list[ObservedContainer]]:
    """Managed containers of services, by desired name (``<service>.<slot>``)."""
    found: dict[str, list[ObservedContainer]] = {}
    for node in nodes.values():
        if node.duplicate_of is not None:
            continue
        for c in node.containers:
            if c.managed and SERVICE_LABEL in c.labels:
                found.setdefault(c.labels.get(NAME_LABEL, ""), []).append(c)
    return found


def _short(spec_hash: str | None) -> str:
    return (spec_hash or "?")[:12]
