"""The ``services`` and ``service_status`` tables.

``load`` reads the user-owned ``services`` rows and validates each one with ``reconciler.spec``
(one model for services and desired rows; a malformed row becomes a ``ServiceDef`` with an
error, never a failed pass). ``load_status``/``write_status`` read and write the
controller-owned ``service_status`` rows, whose ``spec`` and ``previous_spec`` columns keep the
two specs a rolling update moves between, so a restarted controller carries on. The CLI's
writers (``upsert``, ``prune``) serve ``reconciler apply``. Every function takes an open
connection so the caller decides the transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from reconciler import domain, spec
from reconciler.db import models
from reconciler.spec import model as spec_model

_t = models.services
_s = models.service_status

#: The columns of ``services`` the service model reads (node and state do not apply).
COLUMNS = tuple(
    name
    for name in spec_model.ServiceModel.model_fields
    if name in _t.c and name not in ("node", "state")
)


def _raw_columns() -> list[sa.ColumnElement[Any]]:
    return [
        sa.cast(_t.c[name], sa.Text).label(name) if name in spec_model.JSON_FIELDS else _t.c[name]
        for name in COLUMNS
    ]


def load(conn: sa.Connection) -> list[domain.ServiceDef]:
    """Every service, validated, in name order."""
    rows = conn.execute(sa.select(*_raw_columns()).order_by(_t.c.name)).mappings()
    return [spec.parse_service(dict(r)) for r in rows]


def _kept(value: object) -> domain.ServiceDef | None:
    """A spec kept in ``service_status`` (JSON), as a ``ServiceDef``; None if unreadable."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        return None
    found = spec.parse_service(value, json_text=False)
    return found if found.spec is not None else None


def load_status(conn: sa.Connection) -> dict[str, domain.ServiceState]:
    return {
        r["name"]: domain.ServiceState(
            name=r["name"],
            update_state=domain.UpdateState(r["update_state"]),
            replicas_desired=r["replicas_desired"],
            replicas_running=r["replicas_running"],
            replicas_updated=r["replicas_updated"],
            message=r["message"] or "",
            spec=_kept(r["spec"]),
            previous=_kept(r["previous_spec"]),
        )
        for r in conn.execute(sa.select(_s)).mappings()
    }


def write_status(
    conn: sa.Connection,
    upserts: Iterable[domain.ServiceState],
    deletes: Collection[str],
    *,
    now: float,
) -> None:
    values = [
        {
            "name": s.name,
            "update_state": s.update_state.value,
            "replicas_desired": s.replicas_desired,
            "replicas_running": s.replicas_running,
            "replicas_updated": s.replicas_updated,
            "message": s.message,
            "spec": dict(s.spec.source) if s.spec is not None else None,
            "previous_spec": dict(s.previous.source) if s.previous is not None else None,
            "updated_at": dt.datetime.fromtimestamp(now, dt.UTC),
        }
        for s in upserts
    ]
    if values:
        dialect = conn.dialect.name
        stmt = postgresql.insert(_s) if dialect == "postgresql" else sqlite.insert(_s)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_s.c.name],
            set_={c: stmt.excluded[c] for c in values[0] if c != "name"},
        )
        conn.execute(stmt, values)
    if deletes:
        conn.execute(_s.delete().where(_s.c.name.in_(list(deletes))))


# -- the command line ----------------------------------------------------------------------------


def _values(item: domain.ServiceDef) -> dict[str, Any]:
    source = dict(item.source)
    return {name: source[name] for name in COLUMNS if name in source}


def upsert(conn: sa.Connection, items: Sequence[domain.ServiceDef]) -> tuple[list[str], list[str]]:
    """Insert or update ``items`` by name: (created, updated-or-unchanged) names."""
    existing = set(conn.execute(sa.select(_t.c.name)).scalars())
    created, updated = [], []
    for item in items:
        values = _values(item)
        if item.name in existing:
            conn.execute(
                _t.update()
                .where(_t.c.name == item.name)
                .values(**values, updated_at=sa.func.current_timestamp())
            )
            updated.append(item.name)
        else:
            conn.execute(_t.insert().values(**values))
            created.append(item.name)
    return created, updated


def prune(conn: sa.Connection, *, keep: Collection[str]) -> list[str]:
    """Delete the services not named in ``keep``; their names."""
    gone = sorted(set(conn.execute(sa.select(_t.c.name)).scalars()) - set(keep))
    if gone:
        conn.execute(_t.delete().where(_t.c.name.in_(gone)))
    return gone
