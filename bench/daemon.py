"""Run ``reconciler run`` as a subprocess, and the reconciler contender built on it.

A subprocess rather than a thread, so its CPU time and RSS are its own (``/proc/<pid>``). The
database is migrated and the engines registered as nodes n1..nK by the benchmark itself, with
plain SQL, before the daemon starts; the daemon is stopped by its pid (SIGTERM, then SIGKILL).
Nodes are registered by their unix socket, the transport the raw SDK contender uses too.

``Reconciler`` is the contender: N rows inserted in one transaction with plain SQL, then wait
until all N are ``running`` in ``container_status`` *and* running on the engines; removal is one
``DELETE`` and a wait until no managed container is left.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import sqlalchemy as sa

from bench import fleet as fleet_mod
from reconciler.db import engine as db_engine
from reconciler.db import migrate
from sandbox import SandboxEngine, processes

MANAGED = "reconciler.managed=true"
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 30.0
_SETTLE = 1.0  # after the nodes are healthy: the first (empty) pass runs, rows come later


def fresh_sqlite(workdir: pathlib.Path, name: str) -> str:
    """The URL of a new, empty SQLite file ``workdir/name.db`` (a leftover one is deleted)."""
    for suffix in ("", "-wal", "-shm"):
        (workdir / f"{name}.db{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{workdir}/{name}.db"


def prepare_database(url: str, engines: Sequence[SandboxEngine]) -> sa.Engine:
    """Migrate ``url`` and register ``engines`` as nodes n1..nK (their unix sockets)."""
    migrate.upgrade(url)
    store = db_engine.make_engine(url)
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM nodes"))
        if not engines:
            return store
        conn.execute(
            sa.text("INSERT INTO nodes (name, url) VALUES (:name, :url)"),
            [{"name": f"n{i}", "url": e.unix_url} for i, e in enumerate(engines, 1)],
        )
    return store


def insert_rows(
    store: sa.Engine,
    names: Sequence[str],
    *,
    network: str | None = None,
    node: str | None = None,
) -> None:
    """One transaction of plain INSERTs, as a person or a deploy script would write them."""
    if not names:
        return
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO desired_containers (name, image, command, network, node) "
                "VALUES (:name, :image, :command, :network, :node)"
            ),
            [
                {
                    "name": name,
                    "image": fleet_mod.IMAGE,
                    "command": '["sleep", "3600"]',
                    "network": network,
                    "node": node,
                }
                for name in names
            ],
        )


def scalar(store: sa.Engine, sql: str, **params: object) -> object:
    with store.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


class ReconcilerProcess:
    """``python -m reconciler --database-url URL run --interval 10`` in its own session."""

    def __init__(
        self, url: str, *, nodes: int, log_path: pathlib.Path, interval: float = 10.0
    ) -> None:
        self.url = url
        self.nodes = nodes
        self.log_path = log_path
        self.interval = interval
        self._proc: subprocess.Popen[bytes] | None = None
        self._store = db_engine.make_engine(url)

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self) -> ReconcilerProcess:
        """Start the daemon, wait until every registered node is healthy, then a moment more:
        rows are measured against a running daemon, not one still starting."""
        argv = [
            sys.executable,
            "-m",
            "reconciler",
            "--database-url",
            self.url,
            "run",
            "--interval",
            str(self.interval),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        processes.on_exit(self, self.stop)  # also on SIGTERM of the bench
        try:
            fleet_mod.wait_until(
                self._ready, timeout=_START_TIMEOUT, interval=0.05, what="healthy nodes"
            )
        except BaseException:
            self.stop()
            raise
        time.sleep(_SETTLE)
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            code = self._proc.returncode
            raise RuntimeError(f"reconciler exited with {code}; see {self.log_path}")
        healthy = scalar(self._store, "SELECT count(*) FROM nodes WHERE health = 'healthy'")
        return healthy == self.nodes

    def stop(self) -> None:
        """SIGTERM by pid, wait; SIGKILL if it does not exit in time. Idempotent."""
        proc, self._proc = self._proc, None
        processes.forget(self)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._store.dispose()

    def __enter__(self) -> ReconcilerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Reconciler:
    """The reconciler contender: rows in, containers out, measured from the outside."""

    name = "reconciler"

    def __init__(
        self, fleet: fleet_mod.BenchFleet, engines: Sequence[SandboxEngine], store: sa.Engine
    ) -> None:
        self._fleet = fleet
        self._engines = list(engines)
        self._store = store
        self._n = 0

    def converge(self, n: int, *, network: str | None = None) -> float:
        """Seconds from the INSERT of ``n`` rows until all ``n`` run (status and engines)."""
        names = [f"rcl-{i:04}" for i in range(n)]
        started = time.monotonic()
        insert_rows(self._store, names, network=network)
        self._n = n
        running = "SELECT count(*) FROM container_status WHERE phase = 'running'"
        fleet_mod.wait_until(
            lambda: scalar(self._store, running) == n,
            timeout=600,
            interval=0.05,
            what=f"{n} running rows",
        )
        done = fleet_mod.wait_until(
            lambda: self._fleet.count(self._engines, label=MANAGED, running=True) == n,
            timeout=60,
            interval=0.05,
            what=f"{n} running containers",
        )
        return done - started

    def remove(self) -> float:
        """Seconds from the DELETE of every row until no managed container is left."""
        started = time.monotonic()
        with self._store.begin() as conn:
            conn.execute(sa.text("DELETE FROM desired_containers"))
        fleet_mod.wait_until(
            lambda: scalar(self._store, "SELECT count(*) FROM container_status") == 0,
            timeout=600,
            interval=0.05,
            what="status rows to go",
        )
        done = fleet_mod.wait_until(
            lambda: self._fleet.count(self._engines, label=MANAGED) == 0,
            timeout=60,
            interval=0.05,
            what="managed containers to go",
        )
        return done - started
