"""Migrations: up, down and up again on SQLite and PostgreSQL; models and revisions agree;
a schema that is behind is refused with the command that fixes it."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from reconciler.db import engine as db_engine
from reconciler.db import migrate, models

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tables(url: str) -> set[str]:
    engine = db_engine.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    assert _tables(url) == {*models.metadata.tables, "alembic_version"}
    assert migrate.check(url) == []

    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert _tables(url) == {"alembic_version"}

    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    assert migrate.check(url) == []


def test_round_trip_on_sqlite(sqlite_url: str) -> None:
    _round_trip(sqlite_url)


def test_round_trip_on_postgres(pg_url: str) -> None:
    _round_trip(pg_url)


def test_upgrade_leaves_sqlite_in_wal_mode(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)

    path = sa.make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_check_sees_drift_on_sqlite(sqlite_url: str) -> None:
    """check() is not vacuous: a column added behind Alembic's back is reported."""
    migrate.upgrade(sqlite_url)
    engine = db_engine.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE nodes ADD COLUMN colour TEXT")
    engine.dispose()

    diffs = migrate.check(sqlite_url)

    assert [(d[0], d[2], d[3].name) for d in diffs] == [("remove_column", "nodes", "colour")]


def test_check_sees_a_changed_server_default_on_postgres(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = db_engine.make_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE nodes ALTER COLUMN schedulable SET DEFAULT false")
    engine.dispose()

    diffs = migrate.check(pg_url)

    assert len(diffs) == 1
    kind, _, table, column, *_ = diffs[0][0]
    assert (kind, table, column) == ("modify_default", "nodes", "schedulable")


def test_alembic_command_checks_clean(sqlite_url: str) -> None:
    """The plain `alembic` command (alembic.ini + env.py) sees no drift either."""
    migrate.upgrade(sqlite_url)

    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={sqlite_url}", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_revisions_never_import_the_application() -> None:
    versions = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert versions
    for path in versions:
        tree = ast.parse(path.read_text())
        modules = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not {m for m in modules if m and m.split(".")[0] == "reconciler"}, path.name


def test_migrations_are_found_in_the_checkout() -> None:
    assert migrate.script_location() == ROOT / "migrations"


# -- refusing a schema that is behind ----------------------------------------------------------


def _require_head(url: str) -> None:
    engine = db_engine.make_engine(url)
    try:
        migrate.require_head(engine)
    finally:
        engine.dispose()


def test_missing_sqlite_file_is_behind_and_is_not_created(sqlite_url: str) -> None:
    path = pathlib.Path(sa.make_url(sqlite_url).database or "")

    with pytest.raises(migrate.SchemaBehind, match=r"run `reconciler db upgrade`"):
        _require_head(sqlite_url)
    assert not path.exists()
    assert migrate.current(sqlite_url) is None


def test_empty_database_is_behind(pg_url: str) -> None:
    engine = db_engine.make_engine(pg_url)
    try:
        assert not migrate.is_at_head(engine)
        with pytest.raises(migrate.SchemaBehind, match=r"no reconciler schema yet.*db upgrade"):
            migrate.require_head(engine)
    finally:
        engine.dispose()


def test_older_revision_is_behind(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url, "+1")
    first = migrate.current(sqlite_url)
    engine = db_engine.make_engine(sqlite_url)
    try:
        if first != migrate.head():
            assert not migrate.is_at_head(engine)
            with pytest.raises(migrate.SchemaBehind, match=rf"at revision {first} .*db upgrade`"):
                migrate.require_head(engine)
        migrate.upgrade(sqlite_url)
        assert migrate.is_at_head(engine)
        migrate.require_head(engine)  # at head: no error
    finally:
        engine.dispose()


def test_unknown_revision_is_ahead(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = db_engine.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    try:
        with pytest.raises(migrate.SchemaAhead, match=r"f00d.*does not know"):
            migrate.require_head(engine)
    finally:
        engine.dispose()


def test_unknown_target_revision_is_a_clear_error(sqlite_url: str) -> None:
    with pytest.raises(migrate.MigrationError, match=r"nope"):
        migrate.upgrade(sqlite_url, "nope")


def test_migrations_are_found_in_an_installed_layout(tmp_path: pathlib.Path) -> None:
    """A wheel puts migrations/ under reconciler/_migrations (pyproject force-include)."""
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "reconciler", site / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "migrations", site / "reconciler" / "_migrations")
    url = f"sqlite:///{tmp_path / 'installed.db'}"
    program = (
        "from reconciler.db import migrate\n"
        f"migrate.upgrade({url!r})\n"
        f"print(migrate.script_location(), migrate.current({url!r}) == migrate.head())\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(site / "reconciler" / "_migrations"), "True"]
