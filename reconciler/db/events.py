"""The ``events`` table: a bounded log of what reconciler did and saw.

``record`` appends; ``trim`` keeps the newest ``keep`` rows. Callers pass an open connection so an
event is written in the same transaction as the change it describes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def trim(conn: sa.Connection, *, keep: int = DEFAULT_KEEP) -> int:
    """Delete all but the newest ``keep`` events; return how many rows went."""
    table = models.events
    cutoff = conn.execute(
        sa.select(table.c.id).order_by(table.c.id.desc()).offset(keep).limit(1)
    ).scalar()
    if cutoff is None:
        return 0
    return conn.execute(table.delete().where(table.c.id <= cutoff)).rowcount
