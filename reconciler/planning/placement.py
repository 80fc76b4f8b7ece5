"""PURE: where a new row may go, and which of those nodes it goes to.

Where this sits: ``planning.planner`` asks :func:`exclusion` why a node cannot take a row
(a constraint that does not hold, not enough cpus or memory, a host port taken) and
:func:`choose` for the node among those that can (``spread`` or ``binpack``). A pass's running
totals live in one :class:`Usage` per node, owned by a single ``plan`` call: it starts with the
reservations of the rows already placed and the ports unmanaged containers hold, and grows with
each placement of the pass, so a batch never overfills a node.

A row's ``cpus`` and ``memory_bytes`` are both its limit and its reservation; a node's capacity
is what its engine reports x (1 + ``Policy.overcommit``); rows without them reserve nothing.
A host port is taken on a node when a managed row placed there requests it, or an unmanaged
running container holds it, for the same protocol and an overlapping host ip (an unset ip,
``0.0.0.0`` and ``::`` overlap every ip).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from reconciler.domain import (
    Constraint,
    ContainerSpec,
    DesiredContainer,
    NodeName,
    NodeSnapshot,
    PortBinding,
)

__all__ = ["Policy", "Strategy", "Usage", "choose", "constraint_holds", "exclusion"]

_ANY_IP = frozenset({None, "", "0.0.0.0", "::"})
_GIB = 1024**3


class Strategy(enum.StrEnum):
    """How a new row picks among the nodes that can take it."""

    #: The least loaded node (reserved share of cpus/memory, then managed containers).
    SPREAD = "spread"
    #: The most loaded node that still fits: fills one node before the next.
    BINPACK = "binpack"


@dataclass(frozen=True)
class Policy:
    """The scheduling knobs of a pass (``reconciler run --strategy/--overcommit/--node-grace``)."""

    strategy: Strategy = Strategy.SPREAD
    #: Capacity is the engine's cpus and memory x (1 + overcommit).
    overcommit: float = 0.05
    #: Seconds a node stays unhealthy before its rows are placed elsewhere.
    node_grace: float = 30.0


@dataclass
class Usage:
    """What one node holds during a pass: managed containers, reservations, host ports."""

    count: int = 0
    cpus: float = 0.0
    memory: int = 0
    ports: list[PortBinding] = field(default_factory=list)

    def add(self, spec: ContainerSpec | None) -> None:
        """Count one managed container placed here (with its row's reservations)."""
        self.count += 1
        if spec is None:
            return
        self.cpus += spec.cpus or 0.0
        self.memory += spec.memory_bytes or 0
        self.ports.extend(p for p in spec.ports if p.host_port)


def constraint_holds(constraint: Constraint, node: NodeSnapshot) -> bool:
    """Does ``constraint`` hold on ``node``? A missing label equals nothing."""
    key = constraint.key
    if key == "node.name":
        found: str | None = node.name
    elif key.startswith("node.labels."):
        found = node.labels.get(key.removeprefix("node.labels."))
    else:
        found = node.engine_labels.get(key.removeprefix("engine.labels."))
    return (found == constraint.value) == constraint.equal


def _clash(wanted: PortBinding, held: PortBinding) -> bool:
    return (
        wanted.host_port == held.host_port
        and wanted.protocol == held.protocol
        and (wanted.host_ip in _ANY_IP or held.host_ip in _ANY_IP or wanted.host_ip == held.host_ip)
    )


def _size(n: float) -> str:
    return f"{n / _GIB:.1f} GiB"


def _amount(n: float) -> str:
    return f"{n:g}"


def exclusion(
    row: DesiredContainer, node: NodeSnapshot, usage: Usage, policy: Policy
) -> str | None:
    """Why ``node`` cannot take ``row`` (``"constraint node.labels.zone==b"``, ``"memory (needs
    10.0 GiB, 3.4 GiB free)"``, ``"port 18080/tcp taken"``); None when it can."""
    for constraint in row.constraints:
        if not constraint_holds(constraint, node):
            return f"constraint {constraint}"
    spec = row.spec
    if spec is None:
        return None
    scale = 1.0 + policy.overcommit
    if spec.cpus and node.cpus:
        free = node.cpus * scale - usage.cpus
        if spec.cpus > free + 1e-9:
            return f"cpus (needs {_amount(spec.cpus)}, {_amount(max(free, 0.0))} free)"
    if spec.memory_bytes and node.memory_bytes:
        free_bytes = node.memory_bytes * scale - usage.memory
        if spec.memory_bytes > free_bytes:
            return f"memory (needs {_size(spec.memory_bytes)}, {_size(max(free_bytes, 0))} free)"
    for wanted in spec.ports:
        if wanted.host_port and any(_clash(wanted, held) for held in usage.ports):
            return f"port {wanted.host_port}/{wanted.protocol} taken"
    return None


def _fullness(node: NodeSnapshot, usage: Usage) -> float:
    """The larger of the reserved shares of cpus and memory (0 when nothing is reserved)."""
    shares = [0.0]
    if node.cpus:
        shares.append(usage.cpus / node.cpus)
    if node.memory_bytes:
        shares.append(usage.memory / node.memory_bytes)
    return max(shares)


def choose(
    candidates: Sequence[NodeName],
    nodes: Mapping[NodeName, NodeSnapshot],
    usage: Mapping[NodeName, Usage],
    strategy: Strategy,
    with_image: AbstractSet[NodeName] = frozenset(),
) -> NodeName:
    """The node of ``candidates`` (non-empty) a new row goes to; among equally loaded nodes
    one in ``with_image`` (it saves a pull), then the lowest name."""
    sign = 1 if strategy is Strategy.SPREAD else -1

    def key(n: NodeName) -> tuple[float, int, bool, str]:
        held = usage.get(n) or Usage()
        return (sign * _fullness(nodes[n], held), sign * held.count, n not in with_image, n)

    return min(candidates, key=key)


def node_usage(
    desired: Sequence[DesiredContainer], nodes: Mapping[NodeName, NodeSnapshot]
) -> dict[NodeName, tuple[float, int, int, int]]:
    """Per node: (reserved cpus, reserved memory bytes, managed running, managed total), from
    the managed containers its picture holds and their rows' reservations."""
    specs = {row.name: row.spec for row in desired}
    usage: dict[NodeName, tuple[float, int, int, int]] = {}
    for name, snapshot in nodes.items():
        cpus, memory, running, total = 0.0, 0, 0, 0
        for c in snapshot.containers:
            if not c.managed:
                continue
            total += 1
            running += c.running
            body = specs.get(c.desired_name or "")
            if body is not None and c.running:
                cpus += body.cpus or 0.0
                memory += body.memory_bytes or 0
        usage[name] = (round(cpus, 3), memory, running, total)
    return usage
