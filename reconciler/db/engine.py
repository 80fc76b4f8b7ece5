"""Create SQLAlchemy engines for the store, tuned so the daemon and people can share it.

SQLite is the embedded default. A person's ``sqlite3`` shell and the daemon write the same file,
so every connection turns on WAL (readers never block the writer) and a busy timeout (a writer
waits for the lock instead of failing with "database is locked").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
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


class DatabaseURLError(ValueError):
    """``--database-url`` cannot be used; the message is one line and never shows a password."""


_EXPECTED = "sqlite:///PATH (or sqlite:////ABSOLUTE/PATH) or postgresql://USER@HOST:PORT/DB"


def parse_url(url: str) -> sa.URL:
    """``url`` parsed and checked before anything connects: a URL SQLAlchemy understands, a
    SQLite path (not a host) or PostgreSQL, a numeric port, and a driver that is installed."""
    try:
        parsed = sa.make_url(normalise_url(url))
        parsed.port  # noqa: B018  (parsing a malformed port raises here)
    except (sa.exc.ArgumentError, ValueError):
        # Echo nothing of the value: it may carry a password.
        raise DatabaseURLError(
            f"--database-url is not a database URL; expected {_EXPECTED}"
        ) from None
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend == "sqlite":
        if parsed.host:
            raise DatabaseURLError(
                f"--database-url {shown}: a SQLite URL names a file after three slashes "
                f"(sqlite:///{parsed.host}{'/' + parsed.database if parsed.database else ''}), "
                "four for an absolute path"
            )
    elif backend != "postgresql":
        raise DatabaseURLError(
            f"--database-url {shown}: {backend} is not supported; expected {_EXPECTED}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as e:
        raise DatabaseURLError(
            f"--database-url {shown}: its driver is not installed ({e.name or e}); "
            "postgresql:// uses psycopg 3 (pip install 'reconciler[postgres]')"
        ) from None
    except sa.exc.NoSuchModuleError:
        raise DatabaseURLError(
            f"--database-url {shown}: unknown driver {parsed.drivername!r}; expected {_EXPECTED}"
        ) from None
    return parsed


def make_engine(url: str | None = None, **kwargs: object) -> sa.Engine:
    """Return an engine for ``url`` (default: :func:`default_url`).

    Raises :class:`DatabaseURLError` for a URL that cannot be used. On SQLite each new
    connection gets ``journal_mode=WAL``, ``busy_timeout`` and ``synchronous=NORMAL``; the
    parent folder of the file is created, and a new database file is created readable by its
    owner only (it holds env values and TLS keys; SQLite gives ``-wal`` and ``-shm`` the same
    mode).
    """
    # A failed statement's error (and its debug traceback) would otherwise print the values it
    # carried: env values of desired rows, TLS keys of nodes.
    kwargs.setdefault("hide_parameters", True)
    parsed = parse_url(url or default_url())
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        if database and database != ":memory:" and not database.startswith("file:"):
            sa.event.listen(engine, "do_connect", _create_private(Path(database)))
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, **kwargs)


def _create_private(path: Path) -> Callable[..., None]:
    """A ``do_connect`` hook that creates a missing database file as 0600 before SQLite does
    (SQLite would create it 0644; only a connection creates it, never a read-only check)."""

    def create(*_args: object) -> None:
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    return create


class UndecodableText(str):
    """Text that SQLite handed back but that is not valid UTF-8 (SQLite stores any bytes in a
    TEXT column). Its value is the text with the bad bytes replaced by U+FFFD; ``position`` is
    the offset of the first bad byte. Readers fail the row that holds it instead of the whole
    query, and never echo the bytes (they may be a secret)."""

    position: int

    def __new__(cls, raw: bytes) -> UndecodableText:
        try:
            raw.decode("utf-8")
            position = -1
        except UnicodeDecodeError as e:
            position = e.start
        text = super().__new__(cls, raw.decode("utf-8", errors="replace"))
        text.position = position
        return text


def _decode_text(raw: bytes) -> str:
    """SQLite's text factory: UTF-8, and :class:`UndecodableText` instead of an exception that
    would fail the whole query (and print the value in the message)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UndecodableText(raw)


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.text_factory = _decode_text  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
