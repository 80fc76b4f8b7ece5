"""Restart policies and health checks on a real engine (issue 13).

``restart``: ``never`` and ``on-failure`` with exit 0 and exit 3; ``always`` (and
``on-failure`` after exit 3) restart with the crash-loop back-off, counted on the engine over
60 s. Health: a failing check (``["CMD", "false"]``) replaces the container with the same
back-off; a passing one reports ``healthy`` in ``container_status.health``.
"""

from __future__ import annotations

import re
import time
import uuid

from daemons import client, insert, running_daemon, status
from waiting import wait_for

WINDOW = 60.0
BACK_OFF = re.compile(
    r"back-off (\d+)s (restarting|replacing) \((exit \d+|unhealthy), (\d+) restarts?\)"
)


def _events(engine, name: str, event: str, since: float, until: float) -> int:
    with client(engine) as api:
        found = api.events(
            since=since,
            until=until,
            filters={"type": "container", "event": event, "label": f"reconciler.name={name}"},
            decode=True,
        )
        return sum(1 for _ in found)


def test_restart_policies_never_on_failure_and_always(engines, sqlite_url):
    tag = uuid.uuid4().hex[:5]
    rows = {
        "never0": ("never", 0),
        "never3": ("never", 3),
        "onfail0": ("on-failure", 0),
        "onfail3": ("on-failure", 3),
        "always1": ("always", 1),
    }
    names = {key: f"{key}-{tag}" for key in rows}
    engine = engines[0]
    with running_daemon(sqlite_url, [engine], reconcile_interval=0.3) as d:
        store = d.store.sql
        since = time.time()
        insert(
            store,
            *(
                {
                    "name": names[key],
                    "image": "busybox:local",
                    "command": ["sh", "-c", f"exit {code}"],
                    "restart": policy,
                }
                for key, (policy, code) in rows.items()
            ),
        )
        seen: dict[str, set[tuple[int, int]]] = {"always1": set(), "onfail3": set()}

        def settled():
            now = status(store)
            for key in seen:
                match = BACK_OFF.fullmatch(now.get(names[key], {}).get("message") or "")
                if match:
                    seen[key].add((int(match[1]), int(match[4])))
            return time.time() >= since + WINDOW and now

        final = wait_for(settled, timeout=WINDOW + 30, interval=0.2, message="the window")
        starts = {key: _events(engine, names[key], "start", since, since + WINDOW) for key in rows}
    print(f"starts in {WINDOW:.0f} s: {starts}; back-offs seen: {seen}")
    assert final[names["never0"]]["phase"] == "completed"
    assert final[names["onfail0"]]["phase"] == "completed"
    assert final[names["never3"]]["phase"] == "failed"
    assert "exited with code 3 (restart never)" in final[names["never3"]]["message"]
    assert starts["never0"] == starts["never3"] == starts["onfail0"] == 1, starts
    # 1, 2, 4, 8, 16, 32 s apart: 6 starts in 60 s (7 if the 32 s wait ends in the window)
    for key in ("always1", "onfail3"):
        assert 5 <= starts[key] <= 7, (key, starts)
        assert all(delay == min(60, 2 ** (n - 1)) for delay, n in seen[key]), seen
        assert max(n for _, n in seen[key]) >= 4, seen
        assert final[names[key]]["restarts"] >= 4 and final[names[key]]["phase"] == "failed"


def test_a_failing_health_check_replaces_the_container_and_a_passing_one_is_healthy(
    engines, sqlite_url
):
    tag = uuid.uuid4().hex[:5]
    sick, well = f"sick-{tag}", f"well-{tag}"
    check = {"interval_seconds": 0.5, "timeout_seconds": 1, "retries": 1}
    engine = engines[0]
    with running_daemon(sqlite_url, [engine], reconcile_interval=0.3) as d:
        store = d.store.sql
        since = time.time()
        insert(
            store,
            {
                "name": sick,
                "image": "busybox:local",
                "command": ["sleep", "3600"],
                "stop_timeout": 0,
                "healthcheck": {"test": ["CMD", "false"], **check},
            },
            {
                "name": well,
                "image": "busybox:local",
                "command": ["sleep", "3600"],
                # Generous: an exec can take a second when the machine is busy.
                "healthcheck": {
                    "test": ["CMD", "true"],
                    **check,
                    "timeout_seconds": 5,
                    "retries": 3,
                },
            },
        )
        healthy = wait_for(
            lambda: (row := status(store).get(well, {})).get("health") == "healthy" and row,
            timeout=30,
            message="the passing check reports healthy",
        )
        messages: set[str] = set()

        def replaced(times: int):
            row = status(store).get(sick) or {}
            messages.add(row.get("message") or "")
            return row.get("restarts", 0) >= times and row

        row = wait_for(lambda: replaced(3), timeout=60, interval=0.2, message="3 replacements")
        until = time.time()
        creates = _events(engine, sick, "create", since, until)
        well_creates = _events(engine, well, "create", since, until)
    backoffs = sorted(
        (int(m[1]), int(m[4])) for text in messages if (m := BACK_OFF.fullmatch(text))
    )
    print(f"sick: {creates} creates in {until - since:.1f}s; back-offs {backoffs}")
    assert healthy["phase"] == "running"
    assert well_creates == 1, "the healthy container is left alone"
    assert 3 <= creates <= 5, creates
    assert backoffs and all(delay == 2 ** (n - 1) for delay, n in backoffs), backoffs
    assert any("replacing (unhealthy" in text for text in messages), messages
    assert row["restarts"] >= 3


def test_apply_wait_counts_a_completed_row_as_done():
    from reconciler import spec
    from reconciler.cli import wait
    from reconciler.db.store import Progress

    item = spec.validate_row_strict(
        {"name": "job", "image": "busybox:local", "command": ["true"], "restart": "never"}
    )
    done = Progress("job", "completed", "n1", "completed (exit 0, restart never)", item.spec_hash)
    assert wait._where(item, done) == "done"
    failed = Progress("job", "failed", "n1", "exited with code 3 (restart never)", item.spec_hash)
    assert wait._where(item, failed) == "failed"
