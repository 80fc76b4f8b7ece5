"""Rescheduling after a node is lost, on three real engines (issue 11).

n3's dockerd is frozen (SIGSTOP), killed (SIGKILL: its containers keep running) or stopped
(SIGTERM: they come back exited). Once n3 has been unhealthy for ``--node-grace`` (3 s here),
its unpinned ``on-node-failure`` rows must run on n1/n2 within 5 s; the pinned row and the
``never`` row stay ``unknown`` with a message. When n3 comes back, every stale copy there is
removed: within 15 s exactly one container per row exists fleet-wide. Once more with the
controller restarted while n3 is away (the placement is read back from ``container_status``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa
from daemons import insert, managed, register, remove_managed, running_daemon, status
from waiting import wait_for

from reconciler.db.store import Store
from reconciler.domain import Health, NodeName
from reconciler.runtime.daemon import Daemon
from reconciler.settings import Settings

SLEEP = ["sleep", "3600"]
GRACE = 3.0
#: Short timings: a frozen engine is unhealthy within ~10 s, the grace is 3 s.
QUICK: dict[str, Any] = {
    "reconcile_interval": 2.0,
    "refresh_interval": 5.0,
    "docker_timeout": 3.0,
    "failure_threshold": 2,
    "backoff_cap": 2.0,
    "node_grace": GRACE,
}


def _rows(prefix: str) -> tuple[list[str], str, str]:
    movable = [f"{prefix}-m{i}" for i in range(7)]
    return movable, f"{prefix}-pinned", f"{prefix}-never"


def _insert(store: sa.Engine, prefix: str) -> None:
    movable, pinned, never = _rows(prefix)
    row = {"image": "busybox:local", "command": SLEEP}
    insert(
        store,
        *({"name": n, **row} for n in movable),
        {"name": pinned, "node": "n3", **row},
        {"name": never, "reschedule": "never", "constraints": ["node.name==n3"], **row},
    )


def _copies(engines: list[Any]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, engine in enumerate(engines, 1):
        for c in managed(engine):
            found[c["Labels"]["reconciler.name"]].append((f"n{i}", c["State"]))
    return found


def _running(store: sa.Engine, names: list[str]) -> bool:
    rows = status(store)
    return all(rows.get(n, {}).get("phase") == "running" for n in names)


def _moved(store: sa.Engine, names: list[str]) -> bool:
    rows = status(store)
    return all(
        rows.get(n, {}).get("phase") == "running" and rows[n]["node"] in ("n1", "n2") for n in names
    )


def _events(store: sa.Engine) -> list[str]:
    with store.connect() as conn:
        return list(conn.execute(sa.text("SELECT message FROM events")).scalars())


def _lose(engine: Any, how: str) -> None:
    if how == "sigstop":
        engine.pause()
    elif how == "sigkill":
        engine.kill()
    else:
        engine.stop()


def _recover(engine: Any, how: str) -> None:
    if how == "sigstop":
        engine.resume()
    else:
        engine.start()


def _unhealthy_since(daemon: Daemon) -> float | None:
    snapshot = daemon.cluster.snapshots().get(NodeName("n3"))
    if snapshot is None or snapshot.health is not Health.UNHEALTHY:
        return None
    return snapshot.unhealthy_since


def _check_lost(store: sa.Engine, daemon: Daemon, prefix: str, on_n3: list[str]) -> None:
    """n3 is going away: its rows run on n1/n2 within 5 s after the grace; the others stay."""
    _, pinned, never = _rows(prefix)
    since = wait_for(lambda: _unhealthy_since(daemon), timeout=40, message="n3 unhealthy")
    deadline = since + GRACE + 5.0
    wait_for(lambda: _moved(store, on_n3), timeout=max(deadline - time.time(), 0.1) + 20)
    moved_at = time.time()
    assert moved_at <= deadline, f"rows running elsewhere {moved_at - since - GRACE:.1f}s late"
    rows = status(store)
    assert rows[pinned]["phase"] == "unknown"
    assert "not rescheduled: the row is pinned to n3" in rows[pinned]["message"]
    assert rows[never]["phase"] == "unknown"
    assert "not rescheduled: reschedule is 'never'" in rows[never]["message"]
    assert any("rescheduled from n3 (unhealthy for" in m for m in _events(store))
    assert all("rescheduled from n3 (unhealthy for" in rows[n]["message"] for n in on_n3), rows


def _check_recovered(engines: list[Any], store: sa.Engine, prefix: str) -> None:
    """n3 is back: within 15 s exactly one container per row, fleet-wide."""
    movable, pinned, never = _rows(prefix)
    recovered = time.monotonic()

    def one_each() -> bool:
        copies = _copies(engines)
        return all(len(copies[n]) == 1 and copies[n][0][1] == "running" for n in movable) and all(
            copies[n] == [("n3", "running")] for n in (pinned, never)
        )

    wait_for(one_each, timeout=40, interval=0.2, message="one container per row")
    assert time.monotonic() - recovered < 15, "converged within 15 s of recovery"
    assert _running(store, [*movable, pinned, never])


@pytest.mark.parametrize("how", ["sigstop", "sigkill", "stop"])
def test_rows_of_a_lost_node_move_and_stale_copies_go(engines, sqlite_url, how):
    prefix = uuid.uuid4().hex[:5]
    movable, pinned, never = _rows(prefix)
    n3 = engines[2]
    with running_daemon(sqlite_url, engines, **QUICK) as daemon:
        store = daemon.store.sql
        _insert(store, prefix)
        wait_for(lambda: _running(store, [*movable, pinned, never]), timeout=90)
        on_n3 = [n for n in movable if status(store)[n]["node"] == "n3"]
        assert on_n3, "spread puts some unpinned rows on n3"
        _lose(n3, how)
        try:
            _check_lost(store, daemon, prefix, on_n3)
        finally:
            _recover(n3, how)
        _check_recovered(engines, store, prefix)


def _start(store: sa.Engine, settings: Settings) -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(store=Store(store), settings=settings)
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    return daemon, thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_controller_restarted_while_the_node_is_away(engines, sqlite_url):
    prefix = uuid.uuid4().hex[:5]
    movable, pinned, never = _rows(prefix)
    n3 = engines[2]
    for e in engines:
        remove_managed(e)
    store = register(sqlite_url, engines)
    settings = Settings(database_url=sqlite_url, **QUICK)
    daemon, thread = _start(store, settings)
    try:
        _insert(store, prefix)
        wait_for(lambda: _running(store, [*movable, pinned, never]), timeout=90)
        on_n3 = [n for n in movable if status(store)[n]["node"] == "n3"]
        assert on_n3
        n3.pause()
        try:
            _check_lost(store, daemon, prefix, on_n3)
            _stop(daemon, thread)
            # A new controller: n3 is unknown to it, the rows' places come from the database.
            daemon, thread = _start(store, settings)
            wait_for(lambda: _unhealthy_since(daemon), timeout=40, message="n3 unhealthy")
            assert _moved(store, on_n3)
            assert len({n: c for n, c in _copies(engines[:2]).items() if n in on_n3}) == len(on_n3)
        finally:
            n3.resume()
        _check_recovered(engines, store, prefix)
    finally:
        _stop(daemon, thread)
        for e in engines:
            remove_managed(e)
        store.dispose()
