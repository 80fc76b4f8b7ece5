"""The ``leases`` table: which controller leads, by conditional updates on the database's clock.

Where this sits: ``runtime.lease.Elector`` calls :func:`acquire_or_renew` every retry period and
:func:`release` on shutdown (through ``Store`` methods); the controller-owned writes of a leader
end with :func:`check_held` in their own transaction, so a controller that lost the lease cannot
commit a status or observed row after someone else took over.

Every statement compares times on the *database's* clock (``now()`` on PostgreSQL,
``strftime('now')`` with milliseconds on SQLite): the daemons' clocks never meet, so they need not
agree. A lease is expired when ``renewed_at + duration_seconds <= now``.

* Renew: ``UPDATE … SET renewed_at = now WHERE holder = me AND transitions = my generation AND
  NOT expired``. One row: still ours, same generation.
* Acquire: ``UPDATE … SET holder = me, transitions = transitions + 1, … WHERE holder IS NULL OR
  expired``. One row: ours, under a new generation. Two controllers racing both run this UPDATE;
  PostgreSQL re-evaluates the WHERE of the second after the first commits (READ COMMITTED) and
  SQLite serialises writers, so exactly one of them gets the row.
* Release: ``UPDATE … SET holder = NULL WHERE holder = me AND transitions = my generation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db import events, models

#: The lease every ``reconciler run`` on one database competes for.
CONTROLLER = "controller"

_t = models.leases


class NotLeader(Exception):
    """A controller-owned write was refused: this process does not hold the lease (any more).
    The transaction was rolled back; nothing was written."""


@dataclass(frozen=True)
class LeaseToken:
    """What a leader holds: the lease's name, its own identity and the generation it acquired."""

    name: str
    holder: str
    generation: int


@dataclass(frozen=True)
class LeaseState:
    """The outcome of one :func:`acquire_or_renew`."""

    #: The generation this controller now holds, or None if someone else holds the lease.
    held: LeaseToken | None
    #: True when ``held`` is a new acquisition (a new generation), False for a renewal.
    acquired: bool
    #: Who holds the lease now (None: released or never taken).
    holder: str | None


def _now(dialect: str) -> str:
    if dialect == "postgresql":
        return "now()"
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def _expired(dialect: str) -> str:
    if dialect == "postgresql":
        return "renewed_at + duration_seconds * interval '1 second' <= now()"
    return "julianday(renewed_at) + duration_seconds / 86400.0 <= julianday('now')"


def _not_expired(dialect: str) -> str:
    if dialect == "postgresql":
        return "renewed_at + duration_seconds * interval '1 second' > now()"
    return "julianday(renewed_at) + duration_seconds / 86400.0 > julianday('now')"


def acquire_or_renew(
    conn: sa.Connection,
    *,
    name: str,
    identity: str,
    duration: float,
    generation: int | None,
    event_message: str = "",
) -> LeaseState:
    """Renew the lease under ``generation`` if it is still ours, else take it if it is free or
    expired; record a ``BecameLeader`` event in the same transaction when it is taken."""
    dialect = conn.dialect.name
    now = _now(dialect)
    if generation is not None:
        renewed = conn.execute(
            sa.text(
                f"UPDATE leases SET renewed_at = {now}, duration_seconds = :duration "
                "WHERE name = :name AND holder = :me AND transitions = :generation "
                f"AND {_not_expired(dialect)}"
            ),
            {"name": name, "me": identity, "duration": duration, "generation": generation},
        ).rowcount
        if renewed == 1:
            return LeaseState(LeaseToken(name, identity, generation), False, identity)
    acquire = sa.text(
        f"UPDATE leases SET holder = :me, acquired_at = {now}, renewed_at = {now}, "
        "duration_seconds = :duration, transitions = transitions + 1 "
        f"WHERE name = :name AND (holder IS NULL OR renewed_at IS NULL OR {_expired(dialect)})"
    )
    params = {"name": name, "me": identity, "duration": duration}
    taken = conn.execute(acquire, params).rowcount
    if taken == 0 and _ensure_row(conn, name):
        taken = conn.execute(acquire, params).rowcount
    row = conn.execute(
        sa.select(_t.c.holder, _t.c.transitions).where(_t.c.name == name)
    ).one_or_none()
    holder = row.holder if row is not None else None
    if taken != 1 or row is None:
        return LeaseState(None, False, holder)
    token = LeaseToken(name, identity, int(row.transitions))
    events.record(
        conn,
        f"lease/{name}",
        "BecameLeader",
        event_message or f"{identity} became leader (generation {token.generation})",
    )
    return LeaseState(token, True, identity)


def _ensure_row(conn: sa.Connection, name: str) -> bool:
    """Create the lease's row (no holder) if it is missing; True if it was created."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(_t).values(name=name, transitions=0).on_conflict_do_nothing()
    return conn.execute(stmt).rowcount == 1


def release(conn: sa.Connection, token: LeaseToken) -> bool:
    """Give the lease up (holder NULL) if ``token`` still holds it; record ``ReleasedLease``."""
    released = conn.execute(
        sa.text(
            f"UPDATE leases SET holder = NULL, renewed_at = {_now(conn.dialect.name)} "
            "WHERE name = :name AND holder = :me AND transitions = :generation"
        ),
        {"name": token.name, "me": token.holder, "generation": token.generation},
    ).rowcount
    if released:
        events.record(
            conn,
            f"lease/{token.name}",
            "ReleasedLease",
            f"{token.holder} released the lease (generation {token.generation})",
        )
    return released == 1


def check_held(conn: sa.Connection, token: LeaseToken | None) -> None:
    """Raise :class:`NotLeader` unless ``token`` holds an unexpired lease now.

    Called at the end of a controller-owned write transaction, after its writes: on SQLite the
    transaction then holds the write lock, on PostgreSQL ``FOR SHARE`` makes a concurrent
    acquire wait for this commit; either way no one can take the lease between this check and
    the commit.
    """
    if token is None:
        raise NotLeader("this controller does not hold the lease")
    dialect = conn.dialect.name
    lock = " FOR SHARE" if dialect == "postgresql" else ""
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM leases WHERE name = :name AND holder = :me "
            f"AND transitions = :generation AND {_not_expired(dialect)}{lock}"
        ),
        {"name": token.name, "me": token.holder, "generation": token.generation},
    ).first()
    if found is None:
        raise NotLeader(f"{token.holder} no longer holds the lease (generation {token.generation})")


def holder(conn: sa.Connection, name: str) -> str | None:
    """Who holds the lease ``name`` now (None: nobody)."""
    return conn.execute(sa.select(_t.c.holder).where(_t.c.name == name)).scalar_one_or_none()


def end_idle_transactions_after(engine: sa.Engine, seconds: float) -> None:
    """On PostgreSQL, have the server end this process's sessions that sit inside a transaction
    for ``seconds`` without a statement (``idle_in_transaction_session_timeout``).

    A controller frozen in the middle of a transaction (SIGSTOP, a VM pause) would otherwise hold
    its row locks, the lease row's included, until it resumes: the next leader's writes would
    wait for it. SQLite has no such timeout: there a frozen writer holds the file's write lock
    until it resumes or dies. Applies to connections opened from now on (the pool is emptied).
    """
    if engine.dialect.name != "postgresql":
        return
    millis = max(1, int(seconds * 1000))

    def on_connect(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        try:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {millis}")
        finally:
            cursor.close()
        dbapi_connection.commit()  # type: ignore[attr-defined]

    sa.event.listen(engine, "connect", on_connect)
    engine.dispose()
