"""A node whose picture is unknown holds its rows where they were last seen (issue 10, item 17).

Real engines, real daemon: rows run on n1 and n2; the daemon stops; n1's dockerd is frozen
(SIGSTOP) and a new daemon starts on the same database. n1 is never reached, so its picture is
unknown: its rows must stay there (``container_status`` keeps ``node`` n1, phase ``unknown``)
and no second copy may appear on n2. Once n1 answers again, every row has exactly one container.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

from daemons import FAST, insert, managed, register, remove_managed, status
from waiting import wait_for

from reconciler.db.store import Store
from reconciler.runtime.daemon import Daemon
from reconciler.settings import Settings

SLEEP = ["sleep", "3600"]
OUTAGE = 12.0


def _start(store, settings: Settings) -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(store=Store(store), settings=settings)
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    return daemon, thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def _tick(seconds: float) -> None:
    """Let ``seconds`` pass between two samples (the sampling period, not a wait for a state)."""
    until = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= until, interval=0.05)


def _names(engine) -> Counter[str]:
    return Counter(c["Labels"]["reconciler.name"] for c in managed(engine))


def test_rows_on_a_node_not_yet_reached_are_not_copied(engines, sqlite_url):
    n1, n2 = engines[0], engines[1]
    for e in (n1, n2):
        remove_managed(e)
    store = register(sqlite_url, [n1, n2])
    settings = Settings(database_url=sqlite_url, **FAST)
    names = [f"hold-{uuid.uuid4().hex[:6]}" for _ in range(6)]
    daemon, thread = _start(store, settings)
    try:
        insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
        wait_for(
            lambda: all(status(store).get(n, {}).get("phase") == "running" for n in names),
            timeout=60,
            message="every row running",
        )
    finally:
        _stop(daemon, thread)
    on_n1 = set(_names(n1))
    assert on_n1, "the rows are spread over both nodes"

    n1.pause()
    daemon, thread = _start(store, settings)
    try:
        samples, copies = 0, Counter[str]()
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:  # sample n2 every ~200 ms during the outage
            copies.update(n for n in _names(n2) if n in on_n1)
            samples += 1
            _tick(0.2)
        rows = status(store)
        assert not copies, f"rows of n1 copied to n2 while n1 was unknown: {dict(copies)}"
        assert samples >= 30
        assert {rows[n]["node"] for n in on_n1} == {"n1"}, "held where they were last seen"
        assert {rows[n]["phase"] for n in on_n1} == {"unknown"}

        n1.resume()
        wait_for(
            lambda: all(status(store).get(n, {}).get("phase") == "running" for n in names),
            timeout=60,
            message="every row running again",
        )
        everywhere = _names(n1) + _names(n2)
        assert all(everywhere[n] == 1 for n in names), dict(everywhere)
        assert set(_names(n1)) == on_n1, "the held rows are still on n1, nothing moved"
    finally:
        if n1.is_paused():
            n1.resume()
        _stop(daemon, thread)
        for e in (n1, n2):
            remove_managed(e)
        store.dispose()
