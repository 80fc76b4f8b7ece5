"""Alembic environment: how a revision reaches the database.

Used both by ``reconciler db ...`` (``reconciler.db.migrate`` builds the Config in code and may
hand over an open connection as ``config.attributes["connection"]``) and by the plain ``alembic``
command in a checkout. The database URL is, in order: that connection, ``config.attributes["url"]``,
``alembic -x url=...``, ``sqlalchemy.url`` in the ini, ``RECONCILER_DATABASE_URL``, and finally
``sqlite:///reconciler.db``. Engines come from ``reconciler.db.engine.make_engine`` so SQLite gets
WAL and a busy timeout here too.

``target_metadata`` is the application's metadata, used only to *compare* (``alembic check``,
``alembic revision --autogenerate``); revisions themselves never import it.
"""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.models import metadata as target_metadata

config = context.config

if config.config_file_name is not None:
    # Only the `alembic` command reads alembic.ini; reconciler keeps its own logging setup.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or db_engine.default_url()
    )
    return db_engine.normalise_url(url)


def _configure(*, connection: sa.Connection | None = None, url: str | None = None) -> None:
    dialect = (
        connection.dialect.name
        if connection is not None
        else sa.make_url(url or "").get_backend_name()
    )
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        literal_binds=connection is None,
        **migrate.context_options(dialect=dialect),
    )


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic upgrade head --sql``) without a database."""
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def _views_survive_table_rebuilds(connection: sa.Connection) -> None:
    """SQLite: let batch mode rebuild a table that views read (revision 0007's views).

    Batch mode copies a table, drops it and renames the copy; since SQLite 3.26 the rename
    re-checks every view, which then names a missing table and fails. The legacy behaviour
    renames without that check, and the views find the rebuilt table by name.
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _views_survive_table_rebuilds(given)
        _configure(connection=given)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = db_engine.make_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            _views_survive_table_rebuilds(connection)
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
