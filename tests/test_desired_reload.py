"""Reloading desired rows parses only the rows whose stored values changed (issue 15)."""

from __future__ import annotations

import sqlalchemy as sa

from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store


def _insert(sql: sa.Engine, *names: str) -> None:
    with sql.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO desired_containers (name, image, command) VALUES (:n, :i, :c)"),
            [{"n": n, "i": "busybox:local", "c": '["sleep", "3600"]'} for n in names],
        )


def test_a_reload_reuses_unchanged_rows_and_reparses_changed_ones(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    sql = db_engine.make_engine(sqlite_url)
    store = Store(sql)
    try:
        _insert(sql, "web-1", "web-2", "web-3")
        first = {r.name: r for r in store.load_desired(known_generation=None).rows or ()}
        with sql.begin() as conn:
            conn.execute(
                sa.text("UPDATE desired_containers SET image = 'other:1' WHERE name = 'web-2'")
            )
            conn.execute(
                sa.text("UPDATE desired_containers SET command = 'not json' WHERE name = 'web-3'")
            )
        second = {r.name: r for r in store.load_desired(known_generation=None).rows or ()}
        assert second["web-1"] is first["web-1"], "unchanged: the earlier parse, not a new one"
        assert second["web-2"].spec is not None and second["web-2"].spec.image == "other:1"
        assert second["web-2"].spec_hash != first["web-2"].spec_hash
        assert second["web-3"].spec is None and second["web-3"].error, (
            "a changed row that no longer parses fails"
        )
        with sql.begin() as conn:
            conn.execute(sa.text("DELETE FROM desired_containers WHERE name = 'web-1'"))
        _insert(sql, "web-1")  # the same values again: equal to the first parse
        third = {r.name: r for r in store.load_desired(known_generation=None).rows or ()}
        assert third["web-1"] == first["web-1"]
    finally:
        sql.dispose()
