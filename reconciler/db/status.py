"""The ``container_status`` table: one controller-owned row per desired name.

The controller is the only writer, so it keeps the rows in memory (``StatusCache``) and writes
only what changed in a pass: a converged fleet of 10,000 rows costs no status writes at all.
The same rows carry each failing row's backoff (``failures``, ``next_attempt_at``), so a
restarted daemon keeps backing off where the last one stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db import events, models
from reconciler.domain import Phase, StatusRow

_t = models.container_status

__all__ = ["StatusCache", "StatusRow", "delete", "load", "trim_history", "upsert"]


def _epoch(value: dt.datetime | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite without type info (should not happen via Core)
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _datetime(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


def load(conn: sa.Connection) -> dict[str, StatusRow]:
    """Every status row, by desired name."""
    rows = conn.execute(sa.select(_t)).mappings()
    return {
        r["name"]: StatusRow(
            name=r["name"],
            phase=Phase(r["phase"]),
            node=r["node"],
            container_id=r["container_id"],
            message=r["message"] or "",
            spec_hash=r["spec_hash"],
            failures=r["failures"],
            next_attempt_at=_epoch(r["next_attempt_at"]),
            service=r["service"],
            health=r["health"],
            restarts=r["restarts"],
        )
        for r in rows
    }


def _insert(conn: sa.Connection) -> sa.Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(_t)
    if dialect == "sqlite":
        return sqlite.insert(_t)
    raise NotImplementedError(f"no upsert for {dialect}")


def upsert(conn: sa.Connection, rows: Iterable[StatusRow], *, now: float) -> None:
    values = [
        {
            "name": r.name,
            "phase": r.phase.value,
            "node": r.node,
            "container_id": r.container_id,
            "message": r.message,
            "spec_hash": r.spec_hash,
            "failures": r.failures,
            "next_attempt_at": _datetime(r.next_attempt_at),
            "service": r.service,
            "health": r.health,
            "restarts": r.restarts,
            "updated_at": _datetime(now),
        }
        for r in rows
    ]
    if not values:
        return
    _record_history(conn, values)
    stmt = _insert(conn)
    stmt = stmt.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=[_t.c.name],
        set_={c: stmt.excluded[c] for c in values[0] if c != "name"},  # type: ignore[attr-defined]
    )
    conn.execute(stmt, values)


def _record_history(conn: sa.Connection, values: Sequence[Mapping[str, Any]]) -> None:
    """Append a ``status_history`` row for each of ``values`` whose phase differs from the
    stored one (or that has no row yet), in the transaction of the status write."""
    names = [v["name"] for v in values]
    query = sa.select(_t.c.name, _t.c.phase).where(_t.c.name.in_(names))
    before = {row.name: row.phase for row in conn.execute(query)}
    changed = [
        {
            "time": v["updated_at"],
            "name": v["name"],
            "phase": v["phase"],
            "previous_phase": before.get(v["name"]),
            "node": v["node"],
            "container_id": v["container_id"],
            "message": v["message"],
        }
        for v in values
        if before.get(v["name"]) != v["phase"]
    ]
    if changed:
        conn.execute(models.status_history.insert(), changed)


def trim_history(conn: sa.Connection, *, keep: int, before: dt.datetime | None = None) -> int:
    """Delete history rows older than ``before`` (None: no age bound) and all but the newest
    ``keep``; return how many went. The events retention, applied here too."""
    return events.trim_table(conn, models.status_history, keep=keep, before=before)


def delete(conn: sa.Connection, names: Iterable[str]) -> None:
    names = list(names)
    if names:
        conn.execute(_t.delete().where(_t.c.name.in_(names)))


class StatusCache:
    """The status rows as last written: ``changes(wanted)`` gives only the difference for
    ``Store.record_pass`` to write, and ``remember`` learns it once it has committed."""

    def __init__(self, rows: Mapping[str, StatusRow]) -> None:
        self._rows = dict(rows)

    @classmethod
    def load(cls, conn: sa.Connection) -> StatusCache:
        return cls(load(conn))

    def get(self, name: str) -> StatusRow | None:
        return self._rows.get(name)

    def rows(self) -> Mapping[str, StatusRow]:
        return self._rows

    def changes(self, wanted: Mapping[str, StatusRow]) -> tuple[list[StatusRow], list[str]]:
        """(rows to upsert, names to delete) to turn the table into ``wanted``."""
        rows = self._rows
        upserts = [
            row
            for name, row in wanted.items()
            if (old := rows.get(name)) is not row and old != row  # identity first: cheap
        ]
        deletes = [name for name in self._rows if name not in wanted]
        return upserts, deletes

    def remember(self, upserts: Iterable[StatusRow], deletes: Iterable[str]) -> None:
        """Record changes once their transaction has committed."""
        for row in upserts:
            self._rows[row.name] = row
        for name in deletes:
            self._rows.pop(name, None)
