"""PostgreSQL LISTEN/NOTIFY wakes the daemon: a psql INSERT runs well before the next interval.

The daemon runs with a 60 s reconcile interval, so only the watcher's wake-up (psycopg >= 3.2,
``notifies(timeout=)``) can make the row run within a second.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from daemons import managed, remove_managed, status
from test_daemon_process import daemon_process, register
from waiting import wait_for

from reconciler.db import engine as db_engine

pytestmark = [pytest.mark.engine, pytest.mark.postgres]


def _psql_insert(pg, database: str, name: str) -> float:
    """INSERT one row with psql; return the monotonic time it committed."""
    subprocess.run(
        [
            *pg.psql_args(database),
            "-c",
            f"INSERT INTO desired_containers (name, image, command) "
            f"VALUES ('{name}', 'busybox:local', '[\"sleep\", \"3600\"]')",
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic()


def test_psql_insert_runs_within_a_second_with_a_60s_interval(engines, pg_url, pg, tmp_path):
    register(pg_url, engines)
    store = db_engine.make_engine(pg_url)
    tag = uuid.uuid4().hex[:6]
    warm, name = f"warm-{tag}", f"wake-{tag}"
    log = tmp_path / "daemon.log"

    def phase(row: str) -> str | None:
        return status(store).get(row, {}).get("phase")

    try:
        with daemon_process(pg_url, log, "--interval", "60") as proc:
            wait_for(lambda: b"starting" in log.read_bytes(), timeout=30)
            # A first row proves the nodes are up and refreshed (its wake may come before they
            # are: allow the 60 s interval for it, plus slack).
            _psql_insert(pg, store.url.database, warm)
            wait_for(lambda: phase(warm) == "running", timeout=90, message="warm-up row running")
            inserted = _psql_insert(pg, store.url.database, name)
            wait_for(lambda: phase(name) == "running", timeout=20, interval=0.01)
            took = time.monotonic() - inserted
            assert proc.poll() is None
        assert took < 1.0, f"the row ran {took:.2f}s after the INSERT (interval 60 s)"
        ours = [c for e in engines for c in managed(e) if c["Names"][0] == f"/{name}"]
        assert len(ours) == 1
    finally:
        store.dispose()
        for e in engines:
            remove_managed(e)
