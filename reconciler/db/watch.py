"""Notice, within a few hundred milliseconds, that someone changed the desired rows.

A change only *wakes* the reconcile loop (the pass then reads the rows itself); a missed
notification costs at most one reconcile interval, never correctness.

* SQLite: one dedicated connection polls ``PRAGMA data_version``, which changes when any other
  connection commits. Our own status writes change it too, so on a change the watcher reads the
  ``change_counters`` generation that only the ``desired_containers`` triggers bump, and wakes
  the loop only when that moved.
* PostgreSQL: ``LISTEN reconciler_changes``; the statement trigger sends a ``NOTIFY``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from reconciler.db import changes

log = logging.getLogger(__name__)


class Watcher(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class OutageReporter(Protocol):
    """Where database failures are reported (``store.Outage``: one line per outage)."""

    def failed(self, error: BaseException) -> None: ...
    def succeeded(self) -> None: ...


class _LogEveryFailure:
    def failed(self, error: BaseException) -> None:
        log.warning("change watcher: database unreachable: %s; retrying", error)

    def succeeded(self) -> None:
        pass


def make_watcher(
    engine: sa.Engine,
    *,
    on_change: Callable[[], None],
    interval: float = 0.1,
    outage: OutageReporter | None = None,
) -> Watcher:
    """The watcher that suits ``engine``'s dialect."""
    kind = PostgresWatcher if engine.dialect.name == "postgresql" else SqliteWatcher
    watcher = kind(engine, on_change=on_change, interval=interval)
    watcher.outage = outage or _LogEveryFailure()
    return watcher


def _is_database_error(error: BaseException) -> bool:
    """A failure of the database or the connection to it (not a bug in the watcher)."""
    if isinstance(error, sa.exc.DBAPIError | sqlite3.Error):
        return True
    module = type(error).__module__
    return module.startswith("psycopg") or isinstance(error, OSError)


class _WatcherThread:
    outage: OutageReporter = _LogEveryFailure()

    def __init__(self, *, name: str) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._guarded_run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _guarded_run(self) -> None:
        # A watcher that dies silently would turn "well under a second" into "one interval":
        # log, wait a moment and watch again.
        while not self._stopping.is_set():
            try:
                self._run()
            except Exception as e:
                if _is_database_error(e):
                    self.outage.failed(e)  # one line per outage, tracebacks at debug level
                else:
                    log.exception("change watcher failed; restarting it")
                self._stopping.wait(1.0)

    def _run(self) -> None:
        raise NotImplementedError


class SqliteWatcher(_WatcherThread):
    def __init__(
        self, engine: sa.Engine, *, on_change: Callable[[], None], interval: float
    ) -> None:
        super().__init__(name="sqlite-watcher")
        self._engine = engine
        self._on_change = on_change
        self._interval = interval

    def _run(self) -> None:
        # A plain DB-API cursor: this runs 20 times a second, and again after every commit of
        # the daemon's own status and observed rows; through SQLAlchemy each read cost ~20x more.
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()

            def read(sql: str, *params: object) -> object:
                cursor.execute(sql, params)
                row = cursor.fetchone()
                return row[0] if row else None

            last_version = read("PRAGMA data_version")
            last_generation = read(changes.GENERATION_SQL, changes.DESIRED)
            raw.rollback()
            self.outage.succeeded()
            while not self._stopping.wait(self._interval):
                version = read("PRAGMA data_version")
                if version == last_version:
                    continue
                last_version = version
                generation = read(changes.GENERATION_SQL, changes.DESIRED)
                raw.rollback()  # end the read transaction so WAL checkpoints can proceed
                if generation != last_generation:
                    last_generation = generation
                    self._on_change()
        finally:
            raw.close()


class PostgresWatcher(_WatcherThread):
    def __init__(
        self, engine: sa.Engine, *, on_change: Callable[[], None], interval: float
    ) -> None:
        super().__init__(name="postgres-listener")
        self._engine = engine
        self._on_change = on_change
        self._interval = interval

    def _run(self) -> None:
        import psycopg  # the `postgres` extra; only needed on PostgreSQL

        url = self._engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f"LISTEN {changes.NOTIFY_CHANNEL}")
            self.outage.succeeded()
            # Anything that changed while we were not listening: wake once to be safe.
            self._on_change()
            while not self._stopping.is_set():
                woke = False
                for _ in conn.notifies(timeout=max(self._interval, 0.5)):
                    woke = True
                    break
                if woke:
                    self._on_change()
