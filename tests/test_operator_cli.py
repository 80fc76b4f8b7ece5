"""The operator's CLI: describe, events (--for, --since, --follow), logs, apply --wait; and the
events log's retention by age.

Engine tests run a daemon (``daemons.running_daemon``) on the sandbox engines and drive the CLI
against the same database, as an operator would from another terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from daemons import running_daemon
from test_metrics import bare_daemon
from waiting import wait_for

from reconciler import cli
from reconciler.db import migrate
from reconciler.db.store import Store

SLEEP = ["sleep", "3600"]


def runner(url: str) -> Callable[..., Result]:
    def invoke(*args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(cli.main, ["--database-url", url, *args], input=stdin)

    return invoke


def ago(dialect: str, hours: int) -> str:
    """SQL for "``hours`` hours ago" in ``dialect``, as a person would type it."""
    if dialect == "sqlite":
        return f"datetime('now', '-{hours} hours')"
    return f"now() - interval '{hours} hours'"


def add_events(store: Store, *events: tuple[str, str, str, int]) -> None:
    """(object, reason, message, hours ago) each, with plain SQL."""
    with store.sql.begin() as conn:
        for obj, reason, message, hours in events:
            when = ago(store.dialect, hours) if hours else "CURRENT_TIMESTAMP"
            conn.execute(
                sa.text(
                    f"INSERT INTO events (time, object, reason, message) "
                    f"VALUES ({when}, :o, :r, :m)"
                ),
                {"o": obj, "r": reason, "m": message},
            )


def messages(store: Store) -> list[str]:
    with store.sql.connect() as conn:
        return list(conn.execute(sa.text("SELECT message FROM events ORDER BY id")).scalars())


# -- events and retention (no engine) ---------------------------------------------------------


def test_events_for_and_since(sqlite_url):
    migrate.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    add_events(
        store,
        ("container/web-1", "Created", "old web-1 event", 2),
        ("container/web-1", "Started", "new web-1 event", 0),
        ("container/web-2", "Created", "new web-2 event", 0),
        ("node/n1", "NodeUnhealthy", "n1 went away", 0),
    )
    invoke = runner(sqlite_url)
    recent = invoke("events", "--for", "web-1", "--since", "10m")
    assert recent.exit_code == 0, recent.output
    assert "new web-1 event" in recent.output
    assert "old web-1 event" not in recent.output and "web-2" not in recent.output
    both = invoke("events", "--for", "web-1", "--since", "3h")
    assert both.output.index("old web-1 event") < both.output.index("new web-1 event")
    node = invoke("events", "--for", "node/n1")
    assert "n1 went away" in node.output and "web-1" not in node.output
    everything = invoke("events")
    assert all(m in everything.output for m in ("old web-1", "new web-2", "n1 went away"))
    bad = invoke("events", "--since", "ten minutes")
    assert bad.exit_code == 2 and "--since" in bad.output
    none = invoke("events", "--for", "nobody")
    assert none.exit_code == 0 and "no events for nobody" in none.output
    store.close()


def test_events_follow_prints_new_events_until_interrupted(sqlite_url):
    migrate.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    add_events(store, ("container/a", "Created", "before following", 0))
    follow = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--database-url", sqlite_url, "events", "--for",
         "a", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert "before following" in follow.stdout.readline()
        add_events(store, ("container/b", "Created", "someone else's", 0))
        add_events(store, ("container/a", "Started", "while following", 0))
        line = follow.stdout.readline()  # blocks until the follower prints it
        assert "while following" in line and "Started" in line
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=15) == 0
        assert "someone else's" not in follow.stdout.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(timeout=10)
        store.close()


@pytest.mark.parametrize("db", ["sqlite_url", pytest.param("pg_url", marks=pytest.mark.postgres)])
def test_events_are_trimmed_by_age_as_well_as_count(db, request):
    url = request.getfixturevalue(db)
    migrate.upgrade(url)
    store = Store.open(url)
    add_events(
        store,
        ("container/a", "Created", "three days old", 72),
        ("container/a", "Started", "two hours old", 2),
        ("container/a", "Stopped", "fresh", 0),
    )
    assert store.trim_events(keep=10_000, older_than=24 * 3600) == 1
    assert messages(store) == ["two hours old", "fresh"]
    assert store.trim_events(keep=10_000, older_than=3600) == 1
    assert messages(store) == ["fresh"]
    add_events(store, ("container/a", "Started", "fresher", 0))
    assert store.trim_events(keep=1, older_than=None) == 1  # count alone, as before
    assert messages(store) == ["fresher"]
    store.close()


def test_the_daemon_trims_old_events_at_start(sqlite_url):
    migrate.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    add_events(store, ("container/a", "Created", "old", 13), ("container/a", "Started", "new", 0))
    with bare_daemon(sqlite_url, events_retention="12h"):
        wait_for(lambda: "old" not in messages(store), timeout=30, message="old event trimmed")
        assert "new" in messages(store)
    store.close()


def test_apply_wait_times_out_when_nothing_reconciles(sqlite_url, tmp_path):
    migrate.upgrade(sqlite_url)
    rows = tmp_path / "rows.yaml"
    rows.write_text(json.dumps([{"name": "lonely", "image": "busybox:local"}]))
    result = runner(sqlite_url)("apply", "-f", str(rows), "--wait", "--timeout", "2s")
    assert result.exit_code == 1
    assert "timed out after 2s" in result.output
    assert "lonely is pending" in result.output
    bad = runner(sqlite_url)("apply", "-f", str(rows), "--wait", "--timeout", "soon")
    assert bad.exit_code == 2 and "--timeout" in bad.output


# -- with engines ------------------------------------------------------------------------------


def _rows(tmp_path: Any, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "rows.yaml"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.mark.engine
def test_apply_wait_describe_and_logs_of_a_running_row(engines, sqlite_url, tmp_path):
    with running_daemon(sqlite_url, engines):
        invoke = runner(sqlite_url)
        rows = _rows(
            tmp_path,
            [
                {
                    "name": "talker",
                    "image": "busybox:local",
                    "command": ["sh", "-c", "echo hello-from-talker; echo line-2; sleep 3600"],
                    "env": {"DB_PASSWORD": "hunter2", "GREETING": "hi"},
                    "stop_timeout": 1,
                }
            ],
        )
        applied = invoke("apply", "-f", rows, "--wait", "--timeout", "60")
        assert applied.exit_code == 0, applied.output
        assert "1 row(s) ready" in applied.output
        assert "talker" in applied.output and "running" in applied.output

        described = invoke("describe", "talker")
        assert described.exit_code == 0, described.output
        out = described.output
        assert "Phase:         running" in out
        assert "Node:          n" in out and "(healthy)" in out
        assert "DB_PASSWORD: '***'" in out and "hunter2" not in out
        assert "GREETING: hi" in out
        assert "Created" in out  # its events
        assert "Not running" not in out
        shown = invoke("describe", "talker", "--show-secrets")
        assert "DB_PASSWORD: hunter2" in shown.output

        logs = wait_for(
            lambda: (r := invoke("logs", "talker")).exit_code == 0 and "line-2" in r.output and r,
            timeout=20,
            message="logs of talker",
        )
        assert logs.output.splitlines()[:2] == ["hello-from-talker", "line-2"]
        tail = invoke("logs", "talker", "--tail", "1")
        assert tail.output.splitlines() == ["line-2"]

        node = invoke("describe", "node", "n1")
        assert node.exit_code == 0, node.output
        assert "Health:        healthy" in node.output
        assert "Rows:" in node.output
        missing = invoke("describe", "nobody")
        assert missing.exit_code == 1 and "no desired container named 'nobody'" in missing.output


@pytest.mark.engine
def test_apply_wait_fails_with_the_rows_message(engines, sqlite_url, tmp_path):
    with running_daemon(sqlite_url, engines):
        invoke = runner(sqlite_url)
        rows = _rows(
            tmp_path,
            [
                {"name": "good", "image": "busybox:local", "command": SLEEP, "stop_timeout": 1},
                # A registry on a closed loopback port: a pull (where pulls exist) is refused
                # at once, and nothing leaves the machine.
                {"name": "bad", "image": "127.0.0.1:1/no-such-image:never", "command": SLEEP},
            ],
        )
        result = invoke("apply", "-f", rows, "--wait", "--timeout", "60s")
        assert result.exit_code == 1, result.output
        assert "bad failed:" in result.output
        assert "no-such-image" in result.output
        described = invoke("describe", "bad")
        assert "Phase:         failed" in described.output
        assert "Not running:" in described.output


@pytest.mark.engine
def test_logs_follow_streams_until_interrupted(engines, sqlite_url, tmp_path):
    with running_daemon(sqlite_url, engines):
        rows = _rows(
            tmp_path,
            [
                {
                    "name": "ticker",
                    "image": "busybox:local",
                    "command": ["sh", "-c", "echo tick-1; sleep 2; echo tick-2; sleep 3600"],
                    "stop_timeout": 1,
                }
            ],
        )
        assert runner(sqlite_url)("apply", "-f", rows, "--wait").exit_code == 0
        follow = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--database-url", sqlite_url, "logs", "ticker",
             "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            assert follow.stdout.readline().strip() == "tick-1"
            assert follow.stdout.readline().strip() == "tick-2"  # arrived while following
            follow.send_signal(signal.SIGINT)
            assert follow.wait(timeout=15) == 0
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait(timeout=10)
