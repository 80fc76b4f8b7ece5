"""In-memory stand-ins for the planner's tests: value builders and a tiny Docker simulator.

Only pure logic is tested against these (see STYLE.md, "Tests that prove behaviour"); the
executor's behaviour against Docker is tested on real engines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace

from reconciler import planning
from reconciler.domain import (
    MANAGED_LABEL,
    NAME_LABEL,
    NODE_LABEL,
    SPEC_HASH_LABEL,
    ContainerId,
    ContainerSpec,
    DesiredContainer,
    DesiredState,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    ObservedImage,
    PullPolicy,
)

IMAGE = "busybox:local"


def spec(
    name: str, *, image: str = IMAGE, stop_timeout: int | None = None, pull: str = "missing"
) -> ContainerSpec:
    return ContainerSpec(
        name=name,
        image=image,
        command=("sleep", "3600"),
        stop_timeout=stop_timeout,
        pull=PullPolicy(pull),
    )


def row(
    name: str,
    *,
    state: str = "running",
    node: str | None = None,
    spec_hash: str = "h1",
    image: str = IMAGE,
    stop_timeout: int | None = None,
    error: str | None = None,
    pull: str = "missing",
) -> DesiredContainer:
    """A desired row; with ``error`` it is a malformed one (no spec, no hash)."""
    if error is not None:
        return DesiredContainer(name, DesiredState(state), _node(node), None, None, error)
    body = spec(name, image=image, stop_timeout=stop_timeout, pull=pull)
    return DesiredContainer(name, DesiredState(state), _node(node), body, spec_hash)


def container(
    name: str | None,
    node: str,
    *,
    id: str | None = None,
    state: str = "running",
    spec_hash: str = "h1",
    managed: bool | str = True,
    created: float | None = 0.0,
    docker_name: str | None = None,
) -> ObservedContainer:
    """An observed container; ``managed=False`` gives one without the managed label."""
    labels = {NAME_LABEL: name, SPEC_HASH_LABEL: spec_hash} if name is not None else {}
    if managed is not False:
        labels[MANAGED_LABEL] = "true" if managed is True else str(managed)
    cid = id or f"{node}-{name}-{state}-{spec_hash}".ljust(64, "0")
    return ObservedContainer(
        node=NodeName(node),
        id=ContainerId(cid),
        name="/" + (docker_name or name or cid[:12]),
        image=IMAGE,
        state=state,
        labels=labels,
        created=created,
    )


def node(
    name: str,
    *containers: ObservedContainer,
    health: Health = Health.HEALTHY,
    schedulable: bool = True,
    refreshed: bool = True,
    images: Iterable[str] = (IMAGE,),
) -> NodeSnapshot:
    return NodeSnapshot(
        name=NodeName(name),
        health=health,
        schedulable=schedulable,
        containers=tuple(containers),
        images=tuple(
            ObservedImage(NodeName(name), f"sha256:{i}{tag}", (tag,))
            for i, tag in enumerate(images)
        ),
        refreshed=refreshed,
    )


def cluster(*nodes: NodeSnapshot) -> dict[NodeName, NodeSnapshot]:
    return {n.name: n for n in nodes}


def _node(name: str | None) -> NodeName | None:
    return NodeName(name) if name is not None else None


# --- the simulator -------------------------------------------------------------------------


def apply(
    plan: planning.Plan, nodes: Mapping[NodeName, NodeSnapshot], *, now: float = 0.0
) -> dict[NodeName, NodeSnapshot]:
    """The nodes after every action of ``plan`` succeeded, as a perfect executor would leave them.

    Strict on purpose: an action that targets a missing or unmanaged container, or a node that
    cannot be acted on, raises ``AssertionError``.
    """
    result = dict(nodes)
    for step, action in enumerate(plan.actions):
        match action:
            case planning.Create(name, at, body, spec_hash, start):
                result[at] = _add(result[at], _created(name, at, body, spec_hash, start, now, step))
            case planning.Start(_, at, cid):
                result[at] = _set_state(result[at], cid, "running")
            case planning.Stop(_, at, cid):
                result[at] = _set_state(result[at], cid, "exited")
            case planning.Remove(at, cid):
                result[at] = _drop(result[at], cid)
            case planning.Recreate(name, at, cid, body, spec_hash, _, start):
                fresh = _created(name, at, body, spec_hash, start, now, step)
                result[at] = _add(_drop(result[at], cid), fresh)
            case planning.Blocked():
                pass
    return result


def _created(
    name: str,
    at: NodeName,
    body: ContainerSpec,
    spec_hash: str,
    start: bool,
    now: float,
    step: int,
) -> ObservedContainer:
    cid = hashlib.sha256(repr((at, name, spec_hash, now, step)).encode()).hexdigest()
    labels = {MANAGED_LABEL: "true", NAME_LABEL: name, SPEC_HASH_LABEL: spec_hash, NODE_LABEL: at}
    state = "running" if start else "created"
    return ObservedContainer(
        at, ContainerId(cid), "/" + body.name, body.image, state, labels, created=now
    )


def _target(snapshot: NodeSnapshot, cid: ContainerId) -> ObservedContainer:
    assert snapshot.health is Health.HEALTHY and snapshot.refreshed, (
        f"{snapshot.name} is not usable"
    )
    [found] = [c for c in snapshot.containers if c.id == cid]
    assert found.managed, f"action on unmanaged container {cid}"
    return found


def _add(snapshot: NodeSnapshot, c: ObservedContainer) -> NodeSnapshot:
    assert snapshot.health is Health.HEALTHY and snapshot.refreshed, (
        f"{snapshot.name} is not usable"
    )
    return replace(snapshot, containers=(*snapshot.containers, c))


def _drop(snapshot: NodeSnapshot, cid: ContainerId) -> NodeSnapshot:
    _target(snapshot, cid)
    return replace(snapshot, containers=tuple(c for c in snapshot.containers if c.id != cid))


def _set_state(snapshot: NodeSnapshot, cid: ContainerId, state: str) -> NodeSnapshot:
    _target(snapshot, cid)
    containers = tuple(replace(c, state=state) if c.id == cid else c for c in snapshot.containers)
    return replace(snapshot, containers=containers)
