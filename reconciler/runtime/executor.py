"""Apply a ``Plan`` to the engines: the only place in a pass that changes Docker.

Where this sits in a pass: ``controller`` hands over the actions of a ``planning.Plan``; each
node gets its own small thread pool (``max_per_node`` actions in flight, default 4) and all nodes
work in parallel, so one slow node never holds up another's actions. Every action ends in an
``Outcome`` that says, in words for the status row, what happened: "container web has been
created", or why it failed.

After an action the node's in-memory picture is refreshed for the containers it touched, so the
next pass plans from what is really there instead of repeating the action.

Recovery rules (from ``../shared/ENGINES.md`` and swarmkit's controller):

* a name conflict on create means "look at what is there": a container that carries our labels
  for the same name is adopted; anything else is reported and never touched;
* "task … already exists" on start (a dockerd 20.10 stale task) means remove and create again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, assert_never

from reconciler import errors, planning, spec
from reconciler.docker_api import EngineClient
from reconciler.domain import ContainerId, ContainerSpec, NodeName, Phase

log = logging.getLogger(__name__)

#: Grace period for stopping a container whose row names none (Docker's own default).
DEFAULT_STOP_TIMEOUT = 10


class NodeHandle(Protocol):
    """What the executor needs of a node: its client, and a way to re-read containers."""

    @property
    def client(self) -> EngineClient: ...

    def acting_on(
        self, *, ids: Iterable[str] = (), names: Iterable[str] = ()
    ) -> AbstractContextManager[None]: ...

    def refresh_containers(self, ids: Iterable[str]) -> None: ...

    def record_failure(self, error: errors.EngineError) -> None: ...

    def forget_containers(self, ids: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What became of one action."""

    action: planning.Action
    ok: bool
    #: The phase the row is in now, for ``container_status``; None for removals.
    phase: Phase | None
    node: NodeName | None
    container_id: ContainerId | None
    message: str
    #: On failure: would trying again later help (engine busy, timeout) or not (bad spec)?
    temporary: bool = False

    @property
    def name(self) -> str | None:
        return self.action.name


class Executor:
    """Runs actions with bounded concurrency per node; reusable across passes."""

    def __init__(self, *, max_per_node: int = 4) -> None:
        self._max_per_node = max_per_node
        self._pools: dict[NodeName, futures.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def execute(
        self,
        actions: Sequence[planning.Action],
        nodes: Mapping[NodeName, NodeHandle],
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Apply every non-blocked action; return their outcomes (in completion order).

        Never raises for a failed action: a failure is an ``Outcome`` with ``ok=False``.
        """
        pending: list[futures.Future[Outcome]] = []
        outcomes: list[Outcome] = []
        for action in actions:
            if isinstance(action, planning.Blocked):
                continue
            handle = nodes.get(action.node)
            if handle is None:
                outcomes.append(_failed(action, f"node {action.node} is no longer registered"))
                continue
            pending.append(self._pool(action.node).submit(_apply, action, handle))
        for done in futures.as_completed(pending):
            if done.cancelled():
                continue  # shutting down: the action never started, so nothing to record
            outcome = done.result()
            _log(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        """Let in-flight actions finish, then free the threads."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def _pool(self, node: NodeName) -> futures.ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(node)
            if pool is None:
                pool = futures.ThreadPoolExecutor(
                    max_workers=self._max_per_node, thread_name_prefix=f"exec-{node}"
                )
                self._pools[node] = pool
            return pool


def _apply(action: planning.Action, handle: NodeHandle) -> Outcome:
    """Carry out one action; every failure becomes an ``Outcome``."""
    try:
        with handle.acting_on(ids=_ids(action), names=_names(action)):
            return _dispatch(action, handle)
    except errors.EngineError as e:
        handle.record_failure(e)  # a timeout here counts towards the node's health too
        return _failed(action, str(e), temporary=e.temporary)
    except Exception as e:  # a bug must cost one row, never the loop
        log.exception("unexpected failure applying %s", action)
        return _failed(action, f"internal error: {e!r}", temporary=True)


def _dispatch(action: planning.Action, handle: NodeHandle) -> Outcome:
    client = handle.client
    match action:
        case planning.Create(name=name, node=node, spec=wanted, spec_hash=hash_, start=start):
            cid, message = _create(client, wanted, hash_, start=start)
            _refresh(handle, [cid])
            return _ok(action, _phase(start), node, cid, message)
        case planning.Recreate(node=node, container_id=old, spec=wanted, spec_hash=hash_):
            _stop_and_remove(client, old, timeout=wanted.stop_timeout)
            cid, _ = _create(client, wanted, hash_, start=action.start)
            handle.forget_containers([old])
            _refresh(handle, [cid])
            message = f"container {action.name} has been recreated ({action.reason})"
            return _ok(action, _phase(action.start), node, cid, message)
        case planning.Start(name=name, node=node, container_id=cid):
            try:
                client.start(cid)
            except errors.StaleTask:
                # The container cannot be started again; removing it lets the next pass create
                # it afresh (the planner sees the row without a container).
                client.remove(cid, force=True)
                handle.forget_containers([cid])
                return _ok(
                    action,
                    Phase.PENDING,
                    node,
                    None,
                    f"container {name} had a stale task; removed to be created again",
                )
            except errors.NotFound:
                # Removed behind our back after the picture was taken (docker rm -f): not a
                # failure of the row; the next pass, woken by the destroy event, creates it.
                handle.forget_containers([cid])
                return _ok(
                    action,
                    Phase.PENDING,
                    node,
                    None,
                    f"container {name} disappeared; creating it again",
                )
            _refresh(handle, [cid])
            return _ok(action, Phase.RUNNING, node, cid, f"container {name} has been started")
        case planning.Stop(name=name, node=node, container_id=cid, timeout=timeout):
            client.stop(cid, timeout=DEFAULT_STOP_TIMEOUT if timeout is None else timeout)
            _refresh(handle, [cid])
            return _ok(action, Phase.STOPPED, node, cid, f"container {name} has been stopped")
        case planning.Remove(node=node, container_id=cid, reason=reason):
            with contextlib.suppress(errors.NotFound):  # already gone: the goal is reached
                client.remove(cid, force=True)
            handle.forget_containers([cid])  # a successful remove needs no inspect to confirm
            return _ok(action, None, node, cid, f"container {cid[:12]} has been removed ({reason})")
        case planning.Blocked():
            raise AssertionError("blocked actions are not executed")
        case _:
            assert_never(action)


def _ids(action: planning.Action) -> list[str]:
    """The existing container an action works on (none for a create)."""
    cid = getattr(action, "container_id", None)
    return [cid] if cid else []


def _names(action: planning.Action) -> list[str]:
    """The name a new container gets (creates only: its id is not known before the call)."""
    if isinstance(action, planning.Create | planning.Recreate):
        return [action.spec.name]
    return []


def _refresh(handle: NodeHandle, ids: list[ContainerId]) -> None:
    """Re-read what an action touched, so the next pass plans from the result.

    A failed re-read does not undo the action: the node has recorded the failure against its
    health, and its next refresh (event-driven or forced) brings the picture up to date.
    """
    try:
        handle.refresh_containers(ids)
    except errors.EngineError:
        log.debug("could not re-read %s after an action", ids, exc_info=True)


def _create(
    client: EngineClient, wanted: ContainerSpec, spec_hash: str, *, start: bool
) -> tuple[ContainerId, str]:
    """Create (and start) ``wanted``; adopt a container of ours that already holds the name."""
    labels = spec.container_labels(wanted, spec_hash)
    try:
        cid = client.create_container(wanted, labels=labels)
        message = f"container {wanted.name} has been created"
    except errors.NameConflict:
        existing = client.inspect_container(wanted.name)
        if existing.desired_name != wanted.name:
            raise errors.NameConflict(
                f"the name {wanted.name} is taken by container {existing.id[:12]}, "
                "which reconciler does not manage; rename or remove it",
                node=client.node,
            ) from None
        # Ours, from a pass that was interrupted after create: adopt it. If its spec is stale,
        # the next pass sees the hash differ and recreates it.
        cid = existing.id
        message = f"container {wanted.name} has been adopted"
        if not start or existing.running:
            return cid, message
    if start:
        try:
            client.start(cid)
        except errors.StaleTask:
            client.remove(cid, force=True)
            cid = client.create_container(wanted, labels=labels)
            client.start(cid)
    return cid, message


def _stop_and_remove(client: EngineClient, cid: ContainerId, *, timeout: int | None) -> None:
    try:
        client.stop(cid, timeout=DEFAULT_STOP_TIMEOUT if timeout is None else timeout)
        client.remove(cid, force=True)
    except errors.NotFound:
        pass  # already gone


def _phase(start: bool) -> Phase:
    return Phase.RUNNING if start else Phase.STOPPED


def _ok(
    action: planning.Action, phase: Phase | None, node: NodeName, cid: ContainerId | None, msg: str
) -> Outcome:
    return Outcome(action, True, phase, node, cid, msg)


def _failed(action: planning.Action, message: str, *, temporary: bool = False) -> Outcome:
    node = getattr(action, "node", None)
    cid = getattr(action, "container_id", None)
    return Outcome(action, False, Phase.FAILED, node, cid, message, temporary=temporary)


def _log(outcome: Outcome) -> None:
    where = f" on {outcome.node}" if outcome.node else ""
    if outcome.ok:
        log.info("%s%s", outcome.message, where)
    else:
        log.warning(
            "%s %s failed%s: %s",
            type(outcome.action).__name__.lower(),
            outcome.name or outcome.container_id,
            where,
            outcome.message,
        )
