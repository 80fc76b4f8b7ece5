"""``observed_containers`` and ``observed_images``: SQL mirrors of what each node really has.

Where this sits: ``nodes.cluster`` writes a node's in-memory picture here after each refresh that
changed it (and after every forced refresh); people and ``reconciler get`` read it. The write is
a *diff* against the node's current rows: new rows are inserted, changed rows updated, gone rows
deleted, and unchanged rows are not touched (their ``observed_at`` stays when they were last seen
to change). A removed node's rows are dropped with :func:`drop_node`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from reconciler.db import models
from reconciler.domain import ContainerId, NodeName, ObservedContainer, ObservedImage

_c = models.observed_containers
_i = models.observed_images

#: Columns compared to decide whether a container row changed (``created`` never changes).
_CONTAINER_FIELDS = (
    "name", "image", "image_id", "state", "status", "exit_code", "managed", "desired_name",
    "spec_hash", "labels",
)  # fmt: skip
_IMAGE_FIELDS = ("tags", "size_bytes")


@dataclass(frozen=True)
class SyncResult:
    """How many rows one diff wrote."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __bool__(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)

    def __add__(self, other: SyncResult) -> SyncResult:
        return SyncResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
        )


def sync_containers(
    conn: sa.Connection,
    *,
    node: NodeName,
    containers: Iterable[ObservedContainer],
    now: datetime,
    previous: Mapping[str, ObservedContainer] | None = None,
) -> SyncResult:
    """Make ``node``'s rows equal ``containers``, writing only the difference.

    ``previous`` is what the caller last wrote for ``node`` (see :class:`Mirror`): with it
    nothing is read back and only the containers that differ from it are converted to rows;
    without it the node's rows are read and compared column by column.
    """
    fields = _CONTAINER_FIELDS
    if previous is None:
        wanted: dict[str, dict[str, Any]] = {c.id: _container_row(c) for c in containers}
        return _sync(conn, _c, _c.c.container_id, node=node, wanted=wanted, fields=fields, now=now)
    current = {c.id: c for c in containers}
    new = [
        {"node": node, "container_id": cid, **_container_row(c), "observed_at": now}
        for cid, c in current.items()
        if cid not in previous
    ]
    changed = [
        {"b_key": cid, **{f: row[f] for f in fields}, "observed_at": now}
        for cid, c in current.items()
        # the node's cache hands back the very same object for an unchanged container
        if cid in previous and previous[cid] is not c and previous[cid] != c
        for row in (_container_row(c),)
    ]
    gone = [cid for cid in previous if cid not in current]
    return _write_diff(
        conn, _c, _c.c.container_id, node=node, fields=fields, new=new, changed=changed, gone=gone
    )


class Mirror:
    """What was last written for each node, so the next write is a diff taken in memory.

    The cluster writes a node's picture after every refresh that changed it; during a burst of
    events that is many writes of a picture that differs in one or two containers. Comparing
    against the remembered picture (by identity first) avoids reading the node's rows back and
    converting every container on each write. Call :meth:`remember` only after the transaction
    that wrote the picture has committed, and :meth:`forget` when a node's rows are dropped.
    """

    def __init__(self) -> None:
        self._containers: dict[NodeName, dict[str, ObservedContainer]] = {}
        self._images: dict[NodeName, tuple[ObservedImage, ...]] = {}

    def previous(self, node: NodeName) -> Mapping[str, ObservedContainer] | None:
        return self._containers.get(node)

    def images_changed(self, node: NodeName, images: tuple[ObservedImage, ...]) -> bool:
        return self._images.get(node) != images

    def remember(
        self,
        node: NodeName,
        containers: Iterable[ObservedContainer],
        images: tuple[ObservedImage, ...],
    ) -> None:
        self._containers[node] = {c.id: c for c in containers}
        self._images[node] = images

    def forget(self, node: NodeName) -> None:
        self._containers.pop(node, None)
        self._images.pop(node, None)


def sync_images(
    conn: sa.Connection, *, node: NodeName, images: Iterable[ObservedImage], now: datetime
) -> SyncResult:
    """Make ``node``'s image rows equal ``images``, writing only the difference."""
    wanted = {i.id: {"tags": list(i.tags), "size_bytes": i.size_bytes} for i in images}
    return _sync(conn, _i, _i.c.image_id, node=node, wanted=wanted, fields=_IMAGE_FIELDS, now=now)


def drop_node(conn: sa.Connection, *, node: NodeName) -> int:
    """Delete every observed container and image row of ``node``; return how many."""
    gone = conn.execute(_c.delete().where(_c.c.node == node)).rowcount
    return gone + conn.execute(_i.delete().where(_i.c.node == node)).rowcount


def load_containers(
    conn: sa.Connection, *, node: NodeName | None = None
) -> list[ObservedContainer]:
    """The stored rows as values (all nodes, or one), ordered by node and name."""
    query = sa.select(_c, sa.cast(_c.c.labels, sa.Text).label("labels_text"))
    if node is not None:
        query = query.where(_c.c.node == node)
    rows = conn.execute(query.order_by(_c.c.node, _c.c.name))
    return [
        ObservedContainer(
            node=NodeName(r.node),
            id=ContainerId(r.container_id),
            name=r.name,
            image=r.image,
            state=r.state,
            labels=_object(r.labels_text) or {},
            image_id=r.image_id,
            status=r.status,
            exit_code=r.exit_code,
            created=r.created.replace(tzinfo=r.created.tzinfo or UTC).timestamp()
            if r.created
            else None,
        )
        for r in rows
    ]


def _container_row(c: ObservedContainer) -> dict[str, Any]:
    return {
        "name": c.name,
        "image": c.image,
        "image_id": c.image_id,
        "state": c.state,
        "status": c.status,
        "exit_code": c.exit_code,
        "managed": c.managed,
        "desired_name": c.desired_name,
        "spec_hash": c.spec_hash,
        "labels": dict(c.labels),
        "created": datetime.fromtimestamp(c.created, UTC) if c.created is not None else None,
    }


def _sync(
    conn: sa.Connection,
    table: sa.Table,
    key: sa.Column[Any],
    *,
    node: NodeName,
    wanted: Mapping[str, dict[str, Any]],
    fields: tuple[str, ...],
    now: datetime,
) -> SyncResult:
    current = _current(conn, table, key, node=node, fields=fields)
    new = [
        {"node": node, key.name: k, **v, "observed_at": now}
        for k, v in wanted.items()
        if k not in current
    ]
    changed = [
        {"b_key": k, **{f: v[f] for f in fields}, "observed_at": now}
        for k, v in wanted.items()
        if k in current and any(_differs(current[k][f], v[f]) for f in fields)
    ]
    gone = [k for k in current if k not in wanted]
    return _write_diff(
        conn, table, key, node=node, fields=fields, new=new, changed=changed, gone=gone
    )


def _write_diff(
    conn: sa.Connection,
    table: sa.Table,
    key: sa.Column[Any],
    *,
    node: NodeName,
    fields: tuple[str, ...],
    new: list[dict[str, Any]],
    changed: list[dict[str, Any]],
    gone: list[str],
) -> SyncResult:
    if new:
        conn.execute(table.insert(), new)
    if changed:
        statement = (
            table.update()
            .where(table.c.node == node, key == sa.bindparam("b_key"))
            .values({f: sa.bindparam(f) for f in (*fields, "observed_at")})
        )
        conn.execute(statement, changed)
    if gone:
        conn.execute(table.delete().where(table.c.node == node, key.in_(gone)))
    return SyncResult(len(new), len(changed), len(gone))


def _current(
    conn: sa.Connection, table: sa.Table, key: sa.Column[Any], *, node: str, fields: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The node's rows, JSON columns read as text and parsed here (a bad value just differs)."""
    json_columns = {c.name for c in table.c if c.name in fields and isinstance(c.type, sa.JSON)}
    columns = [
        sa.cast(table.c[f], sa.Text).label(f) if f in json_columns else table.c[f] for f in fields
    ]
    rows = conn.execute(sa.select(key, *columns).where(table.c.node == node))
    return {
        r[0]: {
            f: _object(r[i + 1]) if f in json_columns else r[i + 1] for i, f in enumerate(fields)
        }
        for r in rows
    }


def _object(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except (TypeError, ValueError):
        return None


def _differs(stored: Any, value: Any) -> bool:
    if isinstance(value, bool) or isinstance(stored, bool):
        return bool(stored) != bool(value)
    return bool(stored != value)
