"""`reconciler run` as a real process: crash safety, graceful stop, and PostgreSQL.

The daemon runs as a subprocess (started in its own session, stopped by its pid); the tests kill
it mid-work and start it again, as an operator's machine would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from daemons import insert, managed, register, remove_managed, status
from waiting import wait_for

from reconciler.db import engine as db_engine

SLEEP = ["sleep", "3600"]
RECONCILER = [sys.executable, "-m", "reconciler"]


@contextlib.contextmanager
def daemon_process(url: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*RECONCILER, "--database-url", url, "run", "--interval", "2", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _names(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}-{tag}-{i:02d}" for i in range(n)]


def _all_running(store: sa.Engine, names: list[str]) -> bool:
    rows = status(store)
    return all(rows.get(n, {}).get("phase") == "running" for n in names)


def test_sigkill_while_creating_then_restart_converges_without_duplicates(
    engines, sqlite_url, tmp_path
):
    store = register(sqlite_url, engines)
    names = _names("crash", 50)
    log = tmp_path / "daemon.log"
    try:
        with daemon_process(sqlite_url, log) as proc:
            wait_for(lambda: b"starting" in log.read_bytes(), timeout=30, message="daemon up")
            insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
            # Kill it in the middle: some containers exist, most do not yet.
            wait_for(lambda: sum(len(managed(e)) for e in engines) >= 5, timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        created_before = sum(len(managed(e)) for e in engines)
        assert created_before < 50, "the kill came too late to prove anything"
        with daemon_process(sqlite_url, log):
            wait_for(
                lambda: _all_running(store, names),
                timeout=120,
                message="all 50 running after restart",
            )
        per_name: dict[str, list[str]] = {}
        for e in engines:
            for c in managed(e):
                per_name.setdefault(c["Labels"]["reconciler.name"], []).append(c["State"])
        assert sorted(per_name) == sorted(names), "orphans or missing containers"
        assert all(states == ["running"] for states in per_name.values()), per_name
    finally:
        for e in engines:
            remove_managed(e)


def test_sigterm_exits_zero_promptly_with_nothing_half_done(engines, sqlite_url, tmp_path):
    store = register(sqlite_url, engines)
    names = _names("term", 12)
    log = tmp_path / "daemon.log"
    try:
        with daemon_process(sqlite_url, log) as proc:
            wait_for(lambda: b"starting" in log.read_bytes(), timeout=30)
            insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
            wait_for(lambda: sum(len(managed(e)) for e in engines) >= 2, timeout=30)
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=15)
            took = time.monotonic() - sent
        assert code == 0, log.read_text()[-2000:]
        assert took < 10, f"took {took:.1f}s to stop"
        # Every container that exists is one the status table knows about (nothing half-done
        # is left unrecorded), and a restart finishes the rest without duplicates.
        with daemon_process(sqlite_url, log):
            wait_for(lambda: _all_running(store, names), timeout=60)
        counts = [c["Labels"]["reconciler.name"] for e in engines for c in managed(e)]
        assert sorted(counts) == sorted(names)
    finally:
        for e in engines:
            remove_managed(e)


def test_daemon_on_postgresql_converges_a_psql_insert(engines, pg_url, pg, tmp_path):
    register(pg_url, engines)
    store = db_engine.make_engine(pg_url)
    name = _names("pg", 1)[0]
    log = tmp_path / "daemon.log"
    try:
        with daemon_process(
            pg_url,
            log,
        ) as proc:
            wait_for(lambda: b"starting" in log.read_bytes(), timeout=30)
            dbname = store.url.database
            subprocess.run(
                [
                    *pg.psql_args(dbname),
                    "-c",
                    f"INSERT INTO desired_containers (name, image, command) "
                    f"VALUES ('{name}', 'busybox:local', '[\"sleep\", \"3600\"]')",
                ],
                check=True,
                capture_output=True,
            )
            wait_for(
                lambda: _all_running(store, [name]),
                timeout=10,
                message="psql insert running (LISTEN/NOTIFY wake)",
            )
            with store.begin() as conn:
                conn.execute(sa.text("DELETE FROM desired_containers WHERE name = :n"), {"n": name})
            wait_for(lambda: name not in status(store), timeout=10)
            assert proc.poll() is None
    finally:
        store.dispose()
        for e in engines:
            remove_managed(e)
