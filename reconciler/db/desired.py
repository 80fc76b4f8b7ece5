"""The ``desired_containers`` table: what people want running.

``load`` is the first step of every reconcile pass: it reads the rows and validates each one with
``reconciler.spec`` into a ``DesiredContainer``. JSON columns are selected ``CAST(... AS TEXT)``
so a malformed value that SQLite accepted reaches ``spec.parse_row`` as text and becomes an error
*on that row*; ``load`` itself never fails because of a row's content.

The writers (``upsert``, ``delete``, ``prune``) serve the CLI (``reconciler apply`` / ``delete``);
people may equally write the table with plain SQL. ``list_with_status`` joins the controller's
``container_status`` for ``reconciler get``. Every function takes an open connection so the
caller decides the transaction.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from reconciler import domain, spec
from reconciler.db import engine as db_engine
from reconciler.db import models
from reconciler.spec import model as spec_model

_t = models.desired_containers
_status = models.container_status

#: The columns that make up a desired container, in the order of ``spec_model.RowModel``.
SPEC_COLUMNS = tuple(spec_model.RowModel.model_fields)


@dataclasses.dataclass(frozen=True)
class UpsertResult:
    """Names written by :func:`upsert`, by what happened to them."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DesiredWithStatus:
    """One desired row and what the controller last reported about it (``reconciler get``)."""

    name: str
    image: str
    state: str
    wanted_node: str | None
    #: None until the controller has written a status row for this name.
    phase: str | None
    node: str | None
    container_id: str | None
    message: str | None
    status_updated_at: datetime | None
    #: The validation error of the row as it is now, if any (``spec.parse_row``).
    error: str | None
    #: The row as it is now, validated (``spec`` None when ``error`` is set): what the CLI
    #: checks against the admission policy and shows (secret-looking env values masked).
    desired: domain.DesiredContainer | None = None


def _raw_columns() -> list[sa.ColumnElement[Any]]:
    """The spec columns, JSON ones as text so ``spec.parse_row`` sees exactly what is stored."""
    return [
        sa.cast(_t.c[name], sa.Text).label(name) if name in spec_model.JSON_FIELDS else _t.c[name]
        for name in SPEC_COLUMNS
    ]


#: The largest spec a row may hold, in characters of its text and JSON columns together.
MAX_ROW_SIZE = 1 << 20


def _size() -> sa.ColumnElement[int]:
    """The stored size of a row's spec columns, computed by the database."""
    total: sa.ColumnElement[int] = sa.literal(0)
    for name in SPEC_COLUMNS:
        total = total + sa.func.coalesce(sa.func.length(sa.cast(_t.c[name], sa.Text)), 0)
    return total


def _load_where(
    conn: sa.Connection, *where: sa.ColumnElement[bool]
) -> list[domain.DesiredContainer]:
    # Rows over the size bound are failed from their size alone, without reading their values:
    # a 20 MiB env would otherwise be loaded, parsed and kept in memory at every reload.
    oversized = {
        row.name: row.size
        for row in conn.execute(
            sa.select(_t.c.name, _size().label("size")).where(*where, _size() > MAX_ROW_SIZE)
        )
    }
    query = sa.select(*_raw_columns()).where(*where)
    if oversized:
        query = query.where(_t.c.name.not_in(list(oversized)))
    loaded = [_PARSED.parse(dict(row)) for row in conn.execute(query).mappings()]
    loaded += [_too_big(name, size) for name, size in oversized.items()]
    if not where:
        _PARSED.keep({item.name for item in loaded})
    return sorted(loaded, key=lambda item: item.name)


class _ParseCache:
    """The last parse of each row, reused while the row's stored values are the same.

    A reload after one row changed then parses one row, not every row (issue 15: 30,000 rows
    took seconds of pydantic validation per pass). Parsing is a pure function of the values,
    and the values are the whole key, so a reused result is the one a new parse would give.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[tuple[object, ...], domain.DesiredContainer]] = {}

    def parse(self, raw: dict[str, Any]) -> domain.DesiredContainer:
        key = tuple((type(v), v) for v in raw.values())  # an undecodable text is not text
        name = str(raw.get("name") or "")
        with self._lock:
            hit = self._rows.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        parsed = _parse(raw)
        with self._lock:
            self._rows[name] = (key, parsed)
        return parsed

    def keep(self, names: set[str]) -> None:
        """Forget rows that are gone (after a full load)."""
        with self._lock:
            for name in self._rows.keys() - names:
                del self._rows[name]


_PARSED = _ParseCache()


def _parse(raw: dict[str, Any]) -> domain.DesiredContainer:
    undecodable = [
        f"{column}: not valid UTF-8 text (bad byte at offset {value.position})"
        for column, value in raw.items()
        if isinstance(value, db_engine.UndecodableText)
    ]
    if undecodable:
        # The rest of the row may be fine, but the bytes must not reach a log or a container.
        return _broken(str(raw.get("name") or ""), "; ".join(undecodable))
    return spec.parse_row(raw, json_text=True)


def _too_big(name: str, size: int) -> domain.DesiredContainer:
    return _broken(
        name,
        f"row: the spec is {size:,} characters; at most {MAX_ROW_SIZE:,} (1 MiB) are accepted",
    )


def _broken(name: str, error: str) -> domain.DesiredContainer:
    return domain.DesiredContainer(
        name=name,
        state=domain.DesiredState.RUNNING,
        node=None,
        spec=None,
        spec_hash=None,
        error=error,
    )


def load(conn: sa.Connection) -> list[domain.DesiredContainer]:
    """Every desired row, ordered by name; a malformed row comes back with ``spec=None, error``."""
    return _load_where(conn)


def names(conn: sa.Connection) -> list[str]:
    """The names of all desired rows, ordered."""
    return list(conn.execute(sa.select(_t.c.name).order_by(_t.c.name)).scalars())


def _json(value: object) -> object:
    # A Python None would be stored as the JSON text 'null'; people expect SQL NULL.
    return sa.null() if value is None else value


def _values(item: domain.DesiredContainer) -> dict[str, Any]:
    """The column values for a valid ``DesiredContainer``, in canonical form."""
    s = item.spec
    if s is None:
        raise ValueError(f"desired container {item.name!r} is invalid: {item.error}")
    ports = [{k: v for k, v in dataclasses.asdict(p).items() if v is not None} for p in s.ports]
    return {
        "name": item.name,
        "image": s.image,
        "command": _json(None if s.command is None else list(s.command)),
        "entrypoint": _json(None if s.entrypoint is None else list(s.entrypoint)),
        "env": dict(s.env),
        "labels": dict(s.labels),
        "node": item.node,
        "state": item.state.value,
        "ports": ports,
        "mounts": [dataclasses.asdict(m) for m in s.mounts],
        "network": s.network,
        "cpus": s.cpus,
        "memory_bytes": s.memory_bytes,
        "user": s.user,
        "workdir": s.workdir,
        "stop_timeout": s.stop_timeout,
        "pull": s.pull.value,
        "restart": s.restart.value,
        "healthcheck": None
        if s.healthcheck is None
        else {k: v for k, v in dataclasses.asdict(s.healthcheck).items() if v is not None}
        | {"test": list(s.healthcheck.test)},
        "constraints": [str(c) for c in item.constraints],
        "reschedule": item.reschedule.value,
    }


def upsert(conn: sa.Connection, items: Sequence[domain.DesiredContainer]) -> UpsertResult:
    """Insert new names, update changed ones, leave equal ones alone.

    "Equal" is semantic: the stored row, validated, equals the item (so a row written by hand as
    ``'["8080:80"]'`` and the same port from YAML are unchanged). Raises ValueError for an item
    without a spec or a name given twice; nothing is written then.
    """
    values = [_values(item) for item in items]
    wanted = [item.name for item in items]
    if len(set(wanted)) != len(wanted):
        raise ValueError(
            f"names appear more than once: {sorted({n for n in wanted if wanted.count(n) > 1})}"
        )
    existing = {d.name: d for d in _load_where(conn, _t.c.name.in_(wanted))} if wanted else {}
    created = [v for v in values if v["name"] not in existing]
    changed = [
        v
        for item, v in zip(items, values, strict=True)
        if item.name in existing and existing[item.name] != item
    ]
    if created:
        conn.execute(_t.insert(), created)
    for row in changed:
        conn.execute(
            _t.update().where(_t.c.name == row["name"]).values(**row, updated_at=sa.func.now())
        )
    changed_names = {v["name"] for v in changed}
    return UpsertResult(
        created=tuple(v["name"] for v in created),
        updated=tuple(v["name"] for v in changed),
        unchanged=tuple(n for n in wanted if n in existing and n not in changed_names),
    )


def delete(conn: sa.Connection, names: Iterable[str]) -> int:
    """Delete the desired rows with these names; return how many there were."""
    wanted = list(names)
    if not wanted:
        return 0
    return conn.execute(_t.delete().where(_t.c.name.in_(wanted))).rowcount


def prune(conn: sa.Connection, *, keep: Collection[str]) -> list[str]:
    """Delete every desired row whose name is not in ``keep``; return the deleted names."""
    doomed = [name for name in names(conn) if name not in keep]
    delete(conn, doomed)
    return doomed


def list_with_status(conn: sa.Connection, name: str | None = None) -> list[DesiredWithStatus]:
    """Desired rows (all, or the one called ``name``) joined with their ``container_status``."""
    query = (
        sa.select(
            *_raw_columns(),
            _status.c.phase,
            _status.c.node.label("status_node"),
            _status.c.container_id,
            _status.c.message,
            _status.c.updated_at.label("status_updated_at"),
        )
        .select_from(_t.outerjoin(_status, _status.c.name == _t.c.name))
        .order_by(_t.c.name)
    )
    if name is not None:
        query = query.where(_t.c.name == name)
    return [_with_status(row) for row in conn.execute(query).mappings()]


def _with_status(row: sa.RowMapping) -> DesiredWithStatus:
    parsed = _parse({k: row[k] for k in SPEC_COLUMNS})
    return DesiredWithStatus(
        name=row["name"],
        image=str(row["image"]),
        state=str(row["state"]),
        wanted_node=row["node"],
        phase=row["phase"],
        node=row["status_node"],
        container_id=row["container_id"],
        message=row["message"],
        status_updated_at=row["status_updated_at"],
        error=parsed.error,
        desired=parsed,
    )
