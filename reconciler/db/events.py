"""The ``events`` table: a bounded log of what reconciler did and saw.

``record`` appends; ``trim`` keeps the newest ``keep`` rows and drops those older than a time;
``since`` reads them back (``reconciler events``, ``describe``). Callers pass an open connection
so an event is written in the same transaction as the change it describes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from reconciler.db import models

DEFAULT_KEEP = 10_000


@dataclass(frozen=True)
class Event:
    object: str
    reason: str
    message: str
    type: str = "Normal"


def record(
    conn: sa.Connection, object: str, reason: str, message: str, *, type: str = "Normal"
) -> None:
    """Append one event: ``record(conn, "node/n1", "NodeUnhealthy", "...", type="Warning")``."""
    conn.execute(
        models.events.insert().values(object=object, reason=reason, message=message, type=type)
    )


def record_many(conn: sa.Connection, events: Iterable[Event]) -> None:
    rows = [
        {"object": e.object, "reason": e.reason, "message": e.message, "type": e.type}
        for e in events
    ]
    if rows:
        conn.execute(models.events.insert(), rows)


def trim(conn: sa.Connection, *, keep: int = DEFAULT_KEEP, before: datetime | None = None) -> int:
    """Delete all but the newest ``keep`` events, and (with ``before``, UTC) every event older
    than ``before``; return how many rows went."""
    return trim_table(conn, models.events, keep=keep, before=before)


def trim_table(
    conn: sa.Connection, table: sa.Table, *, keep: int, before: datetime | None = None
) -> int:
    """The retention of a log table with an ``id`` and a ``time`` column (``events``,
    ``status_history``): all but the newest ``keep`` rows go, and with ``before`` every row
    older than it; return how many rows went."""
    gone = 0
    if before is not None:
        gone += conn.execute(table.delete().where(table.c.time < before)).rowcount
    cutoff = conn.execute(
        sa.select(table.c.id).order_by(table.c.id.desc()).offset(keep).limit(1)
    ).scalar()
    if cutoff is None:
        return gone
    return gone + conn.execute(table.delete().where(table.c.id <= cutoff)).rowcount


@dataclass(frozen=True)
class StoredEvent:
    """One row of ``events`` as read back."""

    id: int
    time: datetime
    type: str
    object: str
    reason: str
    message: str


def since(
    conn: sa.Connection,
    *,
    objects: Collection[str] | None = None,
    after: datetime | None = None,
    after_id: int | None = None,
    last: int | None = None,
) -> list[StoredEvent]:
    """Events oldest first: those about ``objects`` (all when None), newer than ``after`` (UTC)
    and with an id above ``after_id``; with ``last``, only the newest ``last`` of them."""
    table = models.events
    query = sa.select(table)
    if objects is not None:
        query = query.where(table.c.object.in_(list(objects)))
    if after is not None:
        query = query.where(table.c.time >= after)
    if after_id is not None:
        query = query.where(table.c.id > after_id)
    if last is not None:
        query = query.order_by(table.c.id.desc()).limit(last)
        rows = list(conn.execute(query).mappings())[::-1]
    else:
        rows = list(conn.execute(query.order_by(table.c.id)).mappings())
    return [
        StoredEvent(
            id=r["id"],
            time=r["time"],
            type=r["type"],
            object=r["object"],
            reason=r["reason"],
            message=r["message"],
        )
        for r in rows
    ]
