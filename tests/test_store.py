"""The controller's own tables: the bounded events log, status rows and change counters."""

from __future__ import annotations

import sqlalchemy as sa

from reconciler.db import changes, events, migrate, status
from reconciler.db import engine as db_engine
from reconciler.domain import ContainerId, NodeName, Phase


def _store(url: str) -> sa.Engine:
    migrate.upgrade(url)
    return db_engine.make_engine(url)


def test_events_are_trimmed_to_the_newest(sqlite_url):
    store = _store(sqlite_url)
    with store.begin() as conn:
        events.record_many(
            conn, [events.Event(f"container/c{i}", "Created", str(i)) for i in range(50)]
        )
        assert events.trim(conn, keep=10) == 40
        kept = conn.execute(sa.text("SELECT message FROM events ORDER BY id")).scalars().all()
        assert kept == [str(i) for i in range(40, 50)]
        assert events.trim(conn, keep=10) == 0


def test_status_rows_round_trip_and_upsert(sqlite_url):
    store = _store(sqlite_url)
    row = status.StatusRow(
        "web",
        Phase.FAILED,
        NodeName("n1"),
        ContainerId("abc"),
        "boom",
        "h1",
        failures=2,
        next_attempt_at=1_800_000_000.5,
    )
    with store.begin() as conn:
        status.upsert(conn, [row], now=1_800_000_000.0)
        status.upsert(conn, [row], now=1_800_000_001.0)  # again: an update, not a second row
    with store.connect() as conn:
        assert status.load(conn) == {"web": row}
    cache = status.StatusCache({"web": row})
    running = status.StatusRow("web", Phase.RUNNING, NodeName("n1"), ContainerId("abc"))
    assert cache.changes({"web": row}) == ([], [])
    assert cache.changes({"web": running, "db": running}) == ([running, running], [])
    assert cache.changes({}) == ([], ["web"])


def test_every_kind_of_change_to_desired_rows_moves_the_generation(sqlite_url, pg_url):
    for url in (sqlite_url, pg_url):
        store = _store(url)
        seen = []
        for sql in (
            "INSERT INTO desired_containers (name, image) VALUES ('web', 'busybox:local')",
            "UPDATE desired_containers SET image = 'other' WHERE name = 'web'",
            "DELETE FROM desired_containers WHERE name = 'web'",
        ):
            with store.begin() as conn:
                conn.execute(sa.text(sql))
            with store.connect() as conn:
                seen.append(changes.generation(conn))
        with store.begin() as conn:  # the controller's own writes do not move it
            status.upsert(conn, [status.StatusRow("x", Phase.PENDING)], now=0.0)
        with store.connect() as conn:
            seen.append(changes.generation(conn))
        assert seen[0] < seen[1] < seen[2] == seen[3], (url, seen)
        store.dispose()
