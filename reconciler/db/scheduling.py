"""The scheduling side of ``nodes``: drain, the controller-owned usage columns, and what runs
where (for ``reconciler node ls``, ``node drain`` and ``node rm``).

``nodes.drain`` is user-owned (``node drain`` sets it with ``schedulable = false``; ``node
uncordon`` clears both). ``reserved_cpus``, ``reserved_memory_bytes``, ``managed_running`` and
``managed_total`` are written by the controller after a pass when they change
(:func:`write_usage`). What runs where is read from ``observed_containers`` joined to
``desired_containers`` (pinned rows have ``desired_containers.node`` set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from reconciler.db import models
from reconciler.domain import NodeName

_t = models.nodes
_obs = models.observed_containers
_want = models.desired_containers


@dataclass(frozen=True)
class NodeUsage:
    """A node's reservations and managed containers, as ``node ls`` shows them."""

    reserved_cpus: float = 0.0
    reserved_memory_bytes: int = 0
    managed_running: int = 0
    managed_total: int = 0


@dataclass(frozen=True)
class ManagedContainer:
    """A managed container on a node, with whether its row is pinned there."""

    name: str
    running: bool
    pinned: bool


def set_drain(conn: sa.Connection, name: str) -> bool:
    """Mark the node draining and unschedulable; False if there is no such node."""
    result = conn.execute(
        _t.update()
        .where(_t.c.name == name)
        .values(drain=True, schedulable=False, updated_at=sa.func.now())
    )
    return result.rowcount > 0


def write_usage(conn: sa.Connection, usage: Mapping[NodeName, NodeUsage]) -> None:
    """Store each node's usage (rows of nodes not in ``usage`` are left alone)."""
    for node, u in usage.items():
        conn.execute(
            _t.update()
            .where(_t.c.name == node)
            .values(
                reserved_cpus=u.reserved_cpus,
                reserved_memory_bytes=u.reserved_memory_bytes,
                managed_running=u.managed_running,
                managed_total=u.managed_total,
            )
        )


def managed_on(conn: sa.Connection, node: str) -> list[ManagedContainer]:
    """The managed containers last observed on ``node``, by desired name."""
    rows = conn.execute(
        sa.select(_obs.c.desired_name, _obs.c.state, _want.c.node)
        .select_from(_obs.outerjoin(_want, _want.c.name == _obs.c.desired_name))
        .where(_obs.c.node == node, _obs.c.managed.is_(True))
        .order_by(_obs.c.desired_name)
    )
    return [
        ManagedContainer(str(r.desired_name or ""), r.state == "running", r.node == node)
        for r in rows
    ]


def pinned_to(conn: sa.Connection, node: str) -> list[str]:
    """The desired rows pinned to ``node`` (they stay through a drain)."""
    query = sa.select(_want.c.name).where(_want.c.node == node).order_by(_want.c.name)
    return list(conn.execute(query).scalars())


def running_on(conn: sa.Connection, node: str) -> list[str]:
    """Desired names with a managed container running on ``node``: as last observed, or as
    the last pass recorded (``container_status``), whichever knows more."""
    status = models.container_status
    observed = {c.name for c in managed_on(conn, node) if c.running}
    recorded = conn.execute(
        sa.select(status.c.name).where(status.c.node == node, status.c.phase == "running")
    ).scalars()
    return sorted(observed | set(recorded))
