"""Cheap change detection for user-written tables.

Revision 0002 installs triggers that bump ``change_counters.generation`` whenever a statement
inserts, updates or deletes ``desired_containers`` rows (and on PostgreSQL also send
``NOTIFY reconciler_changes``). Reading one counter tells the daemon whether its cached copy of
the desired rows is still current, so a pass with nothing new does not re-read 10,000 rows.
"""

from __future__ import annotations

import sqlalchemy as sa

from reconciler.db import models

DESIRED = "desired_containers"
NOTIFY_CHANNEL = "reconciler_changes"


#: :func:`generation` as plain SQL (``qmark`` style), for a raw DB-API cursor polled many times
#: a second (``watch.SqliteWatcher``).
GENERATION_SQL = "SELECT generation FROM change_counters WHERE table_name = ?"


def generation(conn: sa.Connection, *, table: str = DESIRED) -> int:
    """The current generation of ``table``; 0 if its counter row is missing."""
    t = models.change_counters
    value = conn.execute(sa.select(t.c.generation).where(t.c.table_name == table)).scalar()
    return int(value or 0)
