"""SQL as the operator's console: the overview views, the status history, and (PostgreSQL) a
NOTIFY on ``reconciler_status`` whenever a status row changes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from reconciler.db import migrate
from reconciler.db.store import StatusRow, Store
from reconciler.domain import ContainerId, NodeName, Phase


def _store(url: str) -> Store:
    migrate.upgrade(url)
    store = Store.open(url)
    with store.sql.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO nodes (name, url, cpus, memory_bytes, health) "
                "VALUES ('n1', 'unix:///x.sock', 4, 8589934592, 'healthy')"
            )
        )
        conn.execute(sa.text("INSERT INTO nodes (name, url) VALUES ('n2', 'unix:///y.sock')"))
        for name, cpus in (("web-1", 0.5), ("web-2", 1.5), ("db", None)):
            conn.execute(
                sa.text("INSERT INTO desired_containers (name, image, cpus) VALUES (:n, 'i', :c)"),
                {"n": name, "c": cpus},
            )
    return store


def _status(name: str, phase: Phase, *, node: str = "n1", message: str = "") -> StatusRow:
    return StatusRow(
        name=name,
        phase=phase,
        node=NodeName(node),
        container_id=ContainerId(f"{name}-id"),
        message=message,
    )


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store.sql.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


def _exercise(store: Store) -> None:
    now = time.time() - 60  # a minute ago, so an age bound of 0 s covers every row
    store.record_pass(
        upserts=[_status("web-1", Phase.PENDING), _status("web-2", Phase.RUNNING)],
        deletes=[],
        events=[],
        now=now,
    )
    store.record_pass(
        upserts=[
            _status("web-1", Phase.RUNNING, message="container web-1 has been created"),
            _status("web-2", Phase.RUNNING, message="same phase, new message"),
        ],
        deletes=[],
        events=[],
        now=now + 1,
    )
    store.record_pass(
        upserts=[_status("web-1", Phase.FAILED, message="back-off 1s restarting (exit 1)")],
        deletes=[],
        events=[],
        now=now + 2,
    )


def _check_console(store: Store) -> None:
    _exercise(store)
    history = _rows(store, "SELECT name, phase, previous_phase, message FROM status_history "
                           "ORDER BY id")  # fmt: skip
    assert history == [
        {"name": "web-1", "phase": "pending", "previous_phase": None, "message": ""},
        {"name": "web-2", "phase": "running", "previous_phase": None, "message": ""},
        {"name": "web-1", "phase": "running", "previous_phase": "pending",
         "message": "container web-1 has been created"},
        {"name": "web-1", "phase": "failed", "previous_phase": "running",
         "message": "back-off 1s restarting (exit 1)"},
    ]  # fmt: skip
    wrong = _rows(store, "SELECT name, phase, node, node_health FROM container_overview "
                         "WHERE phase <> 'running' ORDER BY name")  # fmt: skip
    assert wrong == [
        {"name": "db", "phase": "pending", "node": None, "node_health": None},
        {"name": "web-1", "phase": "failed", "node": "n1", "node_health": "healthy"},
    ]
    nodes = {r["name"]: r for r in _rows(store, "SELECT * FROM node_overview")}
    assert nodes["n1"]["containers"] == 2 and nodes["n1"]["running"] == 1
    assert nodes["n1"]["failed"] == 1
    assert float(nodes["n1"]["cpus_reserved"]) == pytest.approx(2.0)
    assert nodes["n1"]["cpus"] == 4 and nodes["n2"]["containers"] == 0
    # The history follows the events' retention (count and age).
    assert store.trim_events(keep=2) >= 2
    assert len(_rows(store, "SELECT id FROM status_history")) == 2
    store.trim_events(keep=100, older_than=0)
    assert _rows(store, "SELECT id FROM status_history") == []


def test_views_and_history_on_sqlite(sqlite_url: str) -> None:
    store = _store(sqlite_url)
    try:
        _check_console(store)
    finally:
        store.close()


@pytest.mark.postgres
def test_views_history_and_notify_on_postgresql(pg_url: str) -> None:
    import psycopg

    store = _store(pg_url)
    url = store.sql.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute("LISTEN reconciler_status")
            _check_console(store)
            told = [n.payload for n in listener.notifies(timeout=2.0, stop_after=4)]
        assert set(told) == {"web-1", "web-2"}, told
    finally:
        store.close()
