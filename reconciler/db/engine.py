"""Create SQLAlchemy engines for the store, tuned so the daemon and people can share it.

SQLite is the embedded default. A person's ``sqlite3`` shell and the daemon write the same file,
so every connection turns on WAL (readers never block the writer) and a busy timeout (a writer
waits for the lock instead of failing with "database is locked").
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from reconciler import settings

DEFAULT_URL = settings.DEFAULTS.database_url
ENV_VAR = settings.env_var("database_url")
SQLITE_BUSY_TIMEOUT_MS = 10_000


def default_url() -> str:
    """The database URL from ``RECONCILER_DATABASE_URL``, else ``reconciler.db`` here."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def normalise_url(url: str) -> str:
    """Let people write ``postgresql://`` and still get the psycopg 3 driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, **kwargs: object) -> sa.Engine:
    """Return an engine for ``url`` (default: :func:`default_url`).

    On SQLite each new connection gets ``journal_mode=WAL``, ``busy_timeout`` and
    ``synchronous=NORMAL``; the parent folder of the file must exist.
    """
    url = normalise_url(url or default_url())
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
