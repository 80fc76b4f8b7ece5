"""Test helpers: run a reconciler daemon in a thread against a database and sandbox engines.

`with running_daemon(url, engines) as d:` migrates the database, registers the engines as nodes
n1..nK, starts `reconciler.runtime.daemon.Daemon` with test-sized timings in a background thread,
and on exit stops it and removes every container it manages from the engines (the engines are
shared by the whole test session).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import docker
import sqlalchemy as sa
from waiting import wait_for

from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.domain import Health
from reconciler.runtime.daemon import Daemon
from reconciler.settings import Settings
from sandbox.engines import SandboxEngine

FAST = {
    "reconcile_interval": 2.0,
    "refresh_interval": 5.0,
    "docker_timeout": 5.0,
    "backoff_cap": 2.0,
}


def register(url: str, engines: Sequence[SandboxEngine]) -> sa.Engine:
    """Migrate ``url`` and insert one node row per engine (n1, n2, ...)."""
    migrate.upgrade(url)
    store = db_engine.make_engine(url)
    with store.begin() as conn:
        for i, e in enumerate(engines, 1):
            conn.execute(
                sa.text("INSERT INTO nodes (name, url) VALUES (:n, :u)"),
                {"n": f"n{i}", "u": e.url},
            )
    return store


@contextlib.contextmanager
def running_daemon(
    url: str, engines: Sequence[SandboxEngine], *, clean: bool = True, **overrides: Any
) -> Iterator[Daemon]:
    """``clean=False`` leaves the managed containers already on the engines (a second daemon
    beside a first one)."""
    for e in engines if clean else ():  # start without managed containers of earlier tests
        remove_managed(e)
    store = register(url, engines)
    settings = Settings(database_url=url, **{**FAST, **overrides})
    daemon = Daemon(store=Store(store), settings=settings)
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    try:
        # Tests start from a fleet that is up: every node healthy and refreshed (the session's
        # engines may still be coming back from an earlier test that stopped one).
        wait_for(
            lambda: (
                len(snaps := daemon.cluster.snapshots()) == len(engines)
                and all(s.refreshed and s.health is Health.HEALTHY for s in snaps.values())
            ),
            timeout=60,
            message="every node healthy and refreshed",
        )
        yield daemon
    finally:
        daemon.stop()
        thread.join(timeout=30)
        for e in engines:
            remove_managed(e)
        store.dispose()


def client(engine: SandboxEngine) -> docker.APIClient:
    return docker.APIClient(base_url=engine.url, version="auto", timeout=30)


def managed(engine: SandboxEngine) -> list[dict[str, Any]]:
    """Managed containers on ``engine`` (raw list entries: Id, Names, State, Labels)."""
    with client(engine) as api:
        return list(api.containers(all=True, filters={"label": "reconciler.managed=true"}))


def remove_managed(engine: SandboxEngine) -> None:
    with client(engine) as api:
        for c in api.containers(all=True, filters={"label": "reconciler.managed=true"}):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(c["Id"], force=True)


def status(store: sa.Engine) -> dict[str, dict[str, Any]]:
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM container_status")).mappings()
        return {r["name"]: dict(r) for r in rows}


def insert(store: sa.Engine, *rows: dict[str, Any]) -> None:
    """Plain INSERTs, JSON given as text, as a person would write them."""
    with store.begin() as conn:
        for row in rows:
            values = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
            cols = ", ".join(f'"{k}"' for k in values)
            marks = ", ".join(f":{k}" for k in values)
            conn.execute(
                sa.text(f"INSERT INTO desired_containers ({cols}) VALUES ({marks})"), values
            )


def execute(store: sa.Engine, sql: str, **params: Any) -> None:
    with store.begin() as conn:
        conn.execute(sa.text(sql), params)
