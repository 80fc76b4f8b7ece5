"""Schema migrations: upgrade, downgrade, current revision, and "is the schema at head".

The schema is the public API (``reconciler.db.models``) and Alembic revisions move a database
from one version of it to the next. This module is the only place that drives Alembic from code:
``reconciler db ...`` calls ``upgrade``/``downgrade``/``current``; every command that reads or
writes rows, and later the daemon, calls ``require_head`` first, so a process never works against
a schema older (or newer) than the code.

The migration scripts are found in the checkout (``<repo>/migrations``) or, in an installed
wheel, in ``reconciler/_migrations`` (pyproject's ``force-include``). The Alembic ``Config`` is
built in code, so ``alembic.ini`` is needed only by the plain ``alembic`` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from reconciler.db import engine as db_engine
from reconciler.db import models

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
UPGRADE_HINT = "run `reconciler db upgrade`"


class MigrationError(RuntimeError):
    """Alembic refused a command, e.g. an unknown revision; the message says why."""


class SchemaMismatch(RuntimeError):
    """The database's schema revision is not the one this code was written for."""


class SchemaBehind(SchemaMismatch):
    """The database lacks revisions (or the schema); ``reconciler db upgrade`` fixes it."""


class SchemaAhead(SchemaMismatch):
    """The database was migrated by a newer reconciler; this one does not know its revision."""


def script_location() -> Path:
    """The folder holding ``env.py`` and ``versions/``: packaged copy first, then the checkout."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations"):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise FileNotFoundError(f"no migrations in {_PACKAGE_DIR / '_migrations'} or the checkout")


def context_options(*, dialect: str) -> dict[str, Any]:
    """Options for ``context.configure`` shared by ``env.py`` and :func:`check`.

    Batch mode on SQLite (it cannot ALTER most things in place); compare types and server
    defaults, because a default is part of the contract for people who INSERT by hand.
    """
    return {
        "render_as_batch": dialect == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
    }


def make_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for ``url`` (default: :func:`engine.default_url`)."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["url"] = db_engine.normalise_url(url or db_engine.default_url())
    return config


def _run(url: str | None, action: Any, rev: str) -> None:
    """Run an Alembic command over a connection from ``make_engine`` (so SQLite gets WAL)."""
    config = make_config(url)
    engine = db_engine.make_engine(config.attributes["url"], poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            action(config, rev)
    except CommandError as e:
        raise MigrationError(str(e)) from e
    finally:
        engine.dispose()


def upgrade(url: str | None = None, rev: str = "head") -> None:
    """Migrate the database at ``url`` up to ``rev`` (creating the schema on an empty database)."""
    _run(url, command.upgrade, rev)


def downgrade(url: str | None, rev: str) -> None:
    """Migrate the database at ``url`` down to ``rev`` (``base`` drops every table)."""
    _run(url, command.downgrade, rev)


def head() -> str:
    """The newest revision this code knows."""
    heads = ScriptDirectory.from_config(make_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


def _database_heads(connection: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


def current(url: str | None = None) -> str | None:
    """The database's revision, or None when it has no reconciler schema yet."""
    engine = db_engine.make_engine(url, poolclass=sa.pool.NullPool)
    if _missing_sqlite_file(engine):
        return None
    try:
        with engine.connect() as connection:
            heads = _database_heads(connection)
    finally:
        engine.dispose()
    return ",".join(heads) if heads else None


def installation(url: str | None = None) -> str | None:
    """The database's installation id (revision 0003 creates it), or None before that."""
    engine = db_engine.make_engine(url, poolclass=sa.pool.NullPool)
    if _missing_sqlite_file(engine):
        return None
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("installation"):
                return None
            found = connection.execute(sa.text("SELECT id FROM installation")).scalars().all()
    finally:
        engine.dispose()
    return found[0] if found else None


def is_at_head(engine: sa.Engine) -> bool:
    """True when the database behind ``engine`` is at :func:`head`."""
    if _missing_sqlite_file(engine):
        return False
    with engine.connect() as connection:
        return _database_heads(connection) == (head(),)


def _missing_sqlite_file(engine: sa.Engine) -> bool:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).exists()


def require_head(engine: sa.Engine) -> None:
    """Return quietly when the schema is at head; raise :class:`SchemaMismatch` otherwise.

    Raises :class:`SchemaBehind` (message ends with "run `reconciler db upgrade`") for an empty
    or older database and :class:`SchemaAhead` for a revision this code does not know.
    """
    where = engine.url.render_as_string(hide_password=True)
    if _missing_sqlite_file(engine):
        # Connecting would create an empty file; say what is missing instead.
        raise SchemaBehind(f"there is no database at {where} yet; {UPGRADE_HINT}")
    with engine.connect() as connection:
        found = _database_heads(connection)
    wanted = head()
    if found == (wanted,):
        return
    if not found:
        raise SchemaBehind(f"the database {where} has no reconciler schema yet; {UPGRADE_HINT}")
    known = {rev.revision for rev in ScriptDirectory.from_config(make_config()).walk_revisions()}
    unknown = [rev for rev in found if rev not in known]
    if unknown:
        raise SchemaAhead(
            f"the database {where} is at revision {', '.join(unknown)}, which this reconciler "
            f"does not know (it knows up to {wanted}); a newer reconciler migrated it"
        )
    raise SchemaBehind(
        f"the database {where} is at revision {', '.join(found)} but this reconciler needs "
        f"{wanted}; {UPGRADE_HINT}"
    )


def check(url: str | None = None) -> list[Any]:
    """Differences between ``models.metadata`` and the migrated database (``alembic check``).

    An empty list means the revisions create exactly the schema the code describes. Each item is
    one of Alembic's diff tuples, e.g. ``("add_column", None, "nodes", Column(...))``.
    """
    engine = db_engine.make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts=context_options(dialect=connection.dialect.name)
            )
            return list(compare_metadata(context, models.metadata))
    finally:
        engine.dispose()
