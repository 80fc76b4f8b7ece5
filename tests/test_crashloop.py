"""A container that exits at once backs off like a failing row (issue 10, item 8).

Real engine, real daemon: a row running ``false`` is restarted with delays 1, 2, 4 … s, its
status row says ``failed`` and ``back-off <delay>s restarting (exit 1, <n> restarts)`` while it
waits, and the engine sees a handful of starts in 30 s instead of one a second.
"""

from __future__ import annotations

import re
import time
import uuid

from daemons import client, insert, running_daemon, status
from waiting import wait_for

BACK_OFF = re.compile(r"back-off (\d+)s restarting \(exit 1, (\d+) restarts?\)")
WINDOW = 30.0


def _starts(engine, name: str, since: float, until: float) -> int:
    """``start`` events of the container of desired row ``name`` on ``engine`` in the window."""
    with client(engine) as api:
        events = api.events(
            since=since,
            until=until,
            filters={"type": "container", "event": "start", "label": f"reconciler.name={name}"},
            decode=True,
        )
        return sum(1 for _ in events)


def test_a_container_that_keeps_exiting_backs_off(engines, sqlite_url):
    name = f"crash-{uuid.uuid4().hex[:6]}"
    engine = engines[0]
    with running_daemon(sqlite_url, [engine]) as d:
        store = d.store.sql
        since = time.time()
        insert(store, {"name": name, "image": "busybox:local", "command": ["false"]})
        seen: list[tuple[str, int, int]] = []

        def backing_off(restarts: int):
            row = status(store).get(name) or {}
            match = BACK_OFF.fullmatch(row.get("message") or "")
            if match:
                seen.append((row["phase"], int(match[1]), int(match[2])))
            return match is not None and int(match[2]) >= restarts and row

        row = wait_for(lambda: backing_off(4), timeout=60, interval=0.2, message="4 restarts")
        wait_for(lambda: time.time() >= since + WINDOW, timeout=WINDOW + 5, interval=0.2)
        starts = _starts(engine, name, since, since + WINDOW)

    print(f"{starts} starts in {WINDOW:.0f} s; messages seen: {sorted(set(seen))}")
    assert 3 <= starts <= 8, f"{starts} starts in {WINDOW:.0f} s (one a second before)"
    assert {phase for phase, _, _ in seen} == {"failed"}, "phase failed while it waits"
    assert all(delay == min(60, 2 ** (n - 1)) for _, delay, n in seen), seen
    assert row["failures"] >= 4 and row["next_attempt_at"] is not None, "kept durably"
