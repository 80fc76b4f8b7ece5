"""The controller-owned columns of ``nodes``: health, last error, last seen, engine facts.

Where this sits: ``nodes.cluster`` calls these from the node threads when a node's health changes
or its engine facts are read; ``reconciler node ls`` and people's ``SELECT``s read the result.
Each health *transition* also appends an ``events`` row (``db.events``) in the same transaction.
Callers pass an open connection; every function is a no-op for a row that no longer exists.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from reconciler.db import events, models
from reconciler.domain import EngineInfo, Health, NodeName

_t = models.nodes


def write_health(
    conn: sa.Connection,
    *,
    node: NodeName,
    health: Health,
    failures: int,
    last_error: str | None,
    seen_at: datetime | None = None,
    event: events.Event | None = None,
) -> bool:
    """Set ``health``, ``consecutive_failures`` and ``last_error`` (and ``last_seen_at`` when
    ``seen_at`` is given); append ``event`` if given. False if the node row is gone."""
    values: dict[str, object] = {
        "health": health.value,
        "consecutive_failures": failures,
        "last_error": last_error,
    }
    if seen_at is not None:
        values["last_seen_at"] = seen_at
    if health is Health.UNHEALTHY:
        # When it became unhealthy: kept while it stays so (the node grace counts from here).
        values["unhealthy_since"] = sa.func.coalesce(_t.c.unhealthy_since, sa.func.now())
    elif health is Health.HEALTHY:
        values["unhealthy_since"] = None
    updated = conn.execute(_t.update().where(_t.c.name == node).values(**values)).rowcount > 0
    if updated and event is not None:
        events.record(conn, event.object, event.reason, event.message, type=event.type)
    return updated


def set_last_error(conn: sa.Connection, *, node: NodeName, message: str | None) -> None:
    conn.execute(_t.update().where(_t.c.name == node).values(last_error=message))


def touch_seen(conn: sa.Connection, *, node: NodeName, at: datetime) -> None:
    """Record that the node answered a full refresh at ``at``."""
    conn.execute(_t.update().where(_t.c.name == node).values(last_seen_at=at))


def write_engine_info(conn: sa.Connection, *, node: NodeName, info: EngineInfo) -> bool:
    """Store the engine facts; only when they differ from the row's. True if written."""
    values = {
        "engine_id": info.engine_id,
        "engine_name": info.name,
        "engine_version": info.version,
        "api_version": info.api_version,
        "os": info.os,
        "cpus": info.cpus,
        "memory_bytes": info.memory_bytes,
    }
    columns = [_t.c[k] for k in values] + [sa.cast(_t.c.engine_labels, sa.Text).label("labels")]
    row = conn.execute(sa.select(*columns).where(_t.c.name == node)).first()
    if row is None:
        return False
    same = all(getattr(row, k) == v for k, v in values.items())
    if same and _json(row.labels) == dict(info.labels):
        return False
    conn.execute(
        _t.update().where(_t.c.name == node).values(**values, engine_labels=dict(info.labels))
    )
    return True


def _json(text: str | None) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None  # malformed: differs from anything, so it is rewritten
