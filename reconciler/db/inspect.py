"""Reads for ``reconciler describe``: one row, or one node, with everything known about it.

A desired row comes back as stored (JSON columns decoded where they parse, as text where they do
not, so a broken row can still be described), with its status row, the container observed for
it, the node it is on and how many times the controller started its container again. A node comes
back with its engine facts (never its TLS material: only whether it is set) and the rows placed
on it. Nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from reconciler.db import desired, models, nodes
from reconciler.spec import model as spec_model

_TLS_COLUMNS = ("tls_ca_cert", "tls_client_cert", "tls_client_key")


@dataclass(frozen=True)
class RowDetails:
    name: str
    #: The stored spec columns; JSON ones decoded (or left as text when they do not parse).
    spec: dict[str, Any]
    #: The row's validation error as it is now, if any.
    error: str | None
    #: The ``container_status`` row, or None before the controller wrote one.
    status: dict[str, Any] | None
    #: The ``observed_containers`` row of the status's container, if it is observed.
    container: dict[str, Any] | None
    #: The node the row is on (or asks for), if registered.
    node: nodes.NodeListing | None
    #: ``Started`` events of the row still in the events log: restarts of its container.
    restarts: int


@dataclass(frozen=True)
class NodeDetails:
    listing: nodes.NodeListing
    #: Engine facts and controller-owned columns (TLS columns only say whether they are set).
    facts: dict[str, Any]
    #: Status rows placed on this node: (name, phase, container id, message).
    rows: list[tuple[str, str, str | None, str | None]]
    #: Containers observed on the node: (managed, all).
    containers: tuple[int, int]


def _decoded(column: str, value: Any) -> Any:
    if column in spec_model.JSON_FIELDS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def row(conn: sa.Connection, name: str) -> RowDetails | None:
    """Everything known about desired row ``name``; None if there is no such row."""
    t = models.desired_containers
    raw = conn.execute(sa.select(*desired._raw_columns()).where(t.c.name == name)).mappings()
    found = raw.first()
    if found is None:
        return None
    listed = desired.list_with_status(conn, name)
    error = listed[0].error if listed else None
    spec = {column: _decoded(column, found[column]) for column in desired.SPEC_COLUMNS}
    s = models.container_status
    status_row = conn.execute(sa.select(s).where(s.c.name == name)).mappings().first()
    status = dict(status_row) if status_row is not None else None
    container = None
    if status is not None and status["container_id"]:
        o = models.observed_containers
        seen = conn.execute(
            sa.select(o.c.state, o.c.status, o.c.exit_code, o.c.created, o.c.image).where(
                o.c.node == status["node"], o.c.container_id == status["container_id"]
            )
        ).mappings()
        first = seen.first()
        container = dict(first) if first is not None else None
    where = (status or {}).get("node") or spec.get("node")
    node = next((n for n in nodes.list_node_status(conn) if n.name == where), None)
    e = models.events
    restarts = conn.execute(
        sa.select(sa.func.count())
        .select_from(e)
        .where(e.c.object == f"container/{name}", e.c.reason == "Started")
    ).scalar_one()
    return RowDetails(name, spec, error, status, container, node, int(restarts))


def node(conn: sa.Connection, name: str) -> NodeDetails | None:
    """Everything known about node ``name``; None if there is no such node."""
    listing = next((n for n in nodes.list_node_status(conn) if n.name == name), None)
    if listing is None:
        return None
    t = models.nodes
    found = conn.execute(sa.select(t).where(t.c.name == name)).mappings().one()
    facts = {
        k: (v is not None) if k in _TLS_COLUMNS else v
        for k, v in found.items()
        if k not in ("id", "name", "url", "labels")
    }
    s = models.container_status
    rows = [
        (r.name, r.phase, r.container_id, r.message)
        for r in conn.execute(
            sa.select(s.c.name, s.c.phase, s.c.container_id, s.c.message)
            .where(s.c.node == name)
            .order_by(s.c.name)
        )
    ]
    o = models.observed_containers
    managed, total = conn.execute(
        sa.select(
            sa.func.count().filter(o.c.managed.is_(True)),
            sa.func.count(),
        ).where(o.c.node == name)
    ).one()
    return NodeDetails(listing, facts, rows, (int(managed or 0), int(total or 0)))


def ping(conn: sa.Connection) -> None:
    """Raise unless the database answers a trivial query."""
    conn.execute(sa.text("SELECT 1")).scalar()


@dataclass(frozen=True)
class Progress:
    """Where one row stands, for ``apply --wait``."""

    name: str
    phase: str | None
    node: str | None
    message: str | None
    #: The spec hash the status row was written for (None before any).
    spec_hash: str | None


def status_of(conn: sa.Connection, names: list[str]) -> dict[str, Progress]:
    """The status rows of ``names`` (those that have one)."""
    s = models.container_status
    found: dict[str, Progress] = {}
    for start in range(0, len(names), 500):  # bounded IN lists
        chunk = names[start : start + 500]
        for r in conn.execute(
            sa.select(s.c.name, s.c.phase, s.c.node, s.c.message, s.c.spec_hash).where(
                s.c.name.in_(chunk)
            )
        ):
            found[r.name] = Progress(r.name, r.phase, r.node, r.message, r.spec_hash)
    return found


__all__ = ["NodeDetails", "Progress", "RowDetails", "node", "ping", "row", "status_of"]
