"""The user-owned side of the ``nodes`` table: list, add, remove, cordon.

The controller-owned columns (health, engine facts) are written by ``db.node_state``; here they
are only read, for ``reconciler node ls``. People may write the table with plain SQL as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from reconciler.db import engine as db_engine
from reconciler.db import models, scheduling
from reconciler.domain import NodeName, NodeRow

_t = models.nodes


def _labels(raw: object) -> dict[str, str]:
    """Node labels as a dict of strings; a malformed value (or bytes that are not UTF-8) reads
    as no labels."""
    if isinstance(raw, db_engine.UndecodableText):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def list_nodes(conn: sa.Connection) -> list[NodeRow]:
    """Every node row, ordered by name."""
    rows = conn.execute(
        sa.select(
            _t.c.name,
            _t.c.url,
            sa.cast(_t.c.labels, sa.Text).label("labels"),
            _t.c.schedulable,
            _t.c.tls_ca_cert,
            _t.c.tls_client_cert,
            _t.c.tls_client_key,
            _t.c.allow_insecure_tcp,
            _t.c.id,
            _t.c.drain,
        ).order_by(_t.c.name)
    )
    return [
        NodeRow(
            name=NodeName(r.name),
            url=r.url,
            labels=_labels(r.labels),
            schedulable=bool(r.schedulable),
            drain=bool(r.drain),
            tls_ca_cert=r.tls_ca_cert,
            tls_client_cert=r.tls_client_cert,
            tls_client_key=r.tls_client_key,
            allow_insecure_tcp=bool(r.allow_insecure_tcp),
            row_id=int(r.id),
        )
        for r in rows
    ]


class NodeExists(ValueError):
    """``add_node`` was given a name that is already registered."""


@dataclass(frozen=True)
class NodeListing:
    """A node row with the controller-owned columns, for ``reconciler node ls``."""

    name: NodeName
    url: str
    labels: dict[str, str]
    schedulable: bool
    health: str
    engine_version: str | None
    api_version: str | None
    last_error: str | None
    last_seen_at: datetime | None
    consecutive_failures: int
    #: active, cordoned, draining (managed containers of unpinned rows still there), drained.
    availability: str = "active"
    #: Controller-owned: the reservations of the rows placed here, managed containers.
    reserved_cpus: float | None = None
    reserved_memory_bytes: int | None = None
    managed_running: int | None = None
    managed_total: int | None = None


def add_node(conn: sa.Connection, node: NodeRow) -> None:
    """Register ``node``; raise :class:`NodeExists` if its name is taken."""
    if conn.execute(sa.select(_t.c.id).where(_t.c.name == node.name)).first() is not None:
        raise NodeExists(f"node {node.name!r} already exists")
    conn.execute(
        _t.insert().values(
            name=node.name,
            url=node.url,
            labels=dict(node.labels),
            schedulable=node.schedulable,
            tls_ca_cert=node.tls_ca_cert,
            tls_client_cert=node.tls_client_cert,
            tls_client_key=node.tls_client_key,
            allow_insecure_tcp=node.allow_insecure_tcp,
        )
    )


def remove_node(conn: sa.Connection, name: str) -> bool:
    """Delete the node row called ``name``; False if there was none.

    Containers on that node are left as they are: reconciler stops following the node, it does
    not reach out to clean it.
    """
    return conn.execute(_t.delete().where(_t.c.name == name)).rowcount > 0


def set_schedulable(conn: sa.Connection, name: str, *, schedulable: bool) -> bool:
    """Cordon (``schedulable=False``) or uncordon a node; False if there is no such node."""
    result = conn.execute(
        _t.update()
        .where(_t.c.name == name)
        # Uncordon also ends a drain (it moves nothing back).
        .values(
            schedulable=schedulable,
            **({"drain": False} if schedulable else {}),
            updated_at=sa.func.now(),
        )
    )
    return result.rowcount > 0


def list_node_status(conn: sa.Connection) -> list[NodeListing]:
    """Every node with its health and engine facts, ordered by name."""
    rows = conn.execute(
        sa.select(
            _t.c.name,
            _t.c.url,
            sa.cast(_t.c.labels, sa.Text).label("labels"),
            _t.c.schedulable,
            _t.c.health,
            _t.c.engine_version,
            _t.c.api_version,
            _t.c.last_error,
            _t.c.last_seen_at,
            _t.c.consecutive_failures,
            _t.c.drain,
            _t.c.reserved_cpus,
            _t.c.reserved_memory_bytes,
            _t.c.managed_running,
            _t.c.managed_total,
        ).order_by(_t.c.name)
    )
    return [
        NodeListing(
            name=NodeName(r.name),
            url=r.url,
            labels=_labels(r.labels),
            schedulable=bool(r.schedulable),
            health=r.health,
            engine_version=r.engine_version,
            api_version=r.api_version,
            last_error=r.last_error,
            last_seen_at=r.last_seen_at,
            consecutive_failures=int(r.consecutive_failures or 0),
            availability=_availability(conn, r.name, bool(r.schedulable), bool(r.drain)),
            reserved_cpus=r.reserved_cpus,
            reserved_memory_bytes=r.reserved_memory_bytes,
            managed_running=r.managed_running,
            managed_total=r.managed_total,
        )
        for r in rows.all()
    ]


def _availability(conn: sa.Connection, name: str, schedulable: bool, drain: bool) -> str:
    if not drain:
        return "active" if schedulable else "cordoned"
    moving = [c for c in scheduling.managed_on(conn, name) if not c.pinned]
    return "draining" if moving else "drained"
