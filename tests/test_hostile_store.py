"""Hostile input at the store and the command line (issue 10: items 1, 9, 14, 15, 19).

Each test feeds what a careless or hostile person could write — bytes that are not UTF-8 through
the `sqlite3` program, a 2 MiB row, a database URL that cannot work, a YAML file in Latin-1 — or
takes the database away, and asserts that one row fails (or one line is printed), the rest goes
on, and no secret is echoed.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat
import subprocess
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from daemons import insert, running_daemon, status
from waiting import wait_for

from reconciler import cli, domain
from reconciler.cli import logs as cli_logs
from reconciler.cli import text
from reconciler.db import desired, migrate
from reconciler.db import engine as db_engine
from reconciler.db.store import Store
from sandbox import postgres as sandbox_postgres
from sandbox.engines import SandboxEngine

SECRET = "hunter2_blob"
# {"PASSWORD":"hunter2_blob<0xFF>"}: the reproduction, a secret followed by a bad byte.
BAD_ENV = "X'7B2250415353574F5244223A2268756E746572325F626C6F62FF227D'"


def _path(url: str) -> str:
    path = sa.make_url(url).database
    assert path is not None
    return path


def _sqlite3(url: str, sql: str) -> str:
    done = subprocess.run(
        ["sqlite3", "-bail", _path(url), sql], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["--database-url", url, *args])


def _load(url: str) -> dict[str, domain.DesiredContainer]:
    engine = db_engine.make_engine(url)
    try:
        with engine.connect() as conn:
            return {row.name: row for row in desired.load(conn)}
    finally:
        engine.dispose()


# -- item 1: bytes that are not UTF-8 ----------------------------------------------------------


def test_invalid_utf8_fails_its_row_only_and_is_never_echoed(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    _sqlite3(
        sqlite_url,
        "INSERT INTO desired_containers (name, image) VALUES ('good', 'busybox:local');"
        "INSERT INTO desired_containers (name, image, env) "
        f"VALUES ('bad', 'busybox:local', {BAD_ENV});",
    )

    rows = _load(sqlite_url)
    assert rows["good"].spec is not None and rows["good"].error is None
    assert rows["bad"].spec is None
    assert rows["bad"].error == "env: not valid UTF-8 text (bad byte at offset 25)"

    listing = _cli(sqlite_url, "get", "-o", "json")
    assert listing.exit_code == 0, listing.output
    assert "not valid UTF-8" in listing.output and SECRET not in listing.output


def test_invalid_utf8_in_node_labels_keeps_the_node_followed(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    _sqlite3(
        sqlite_url,
        "INSERT INTO nodes (name, url, labels) VALUES ('n1', 'unix:///nonexistent.sock', "
        "X'7B227A6F6E65223A2261FF227D');",
    )
    store = Store.open(sqlite_url)
    try:
        (node,) = store.list_nodes()
    finally:
        store.close()
    assert node.name == "n1" and dict(node.labels) == {}
    result = _cli(sqlite_url, "node", "ls")
    assert result.exit_code == 0, result.output
    assert "n1" in result.output


@pytest.mark.engine
def test_a_row_of_bad_bytes_does_not_stop_the_controller(
    sqlite_url: str, engines: list[SandboxEngine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_daemon(sqlite_url, engines[:1]) as d:
        _sqlite3(
            sqlite_url,
            "INSERT INTO desired_containers (name, image, env) "
            f"VALUES ('bad', 'busybox:local', {BAD_ENV});",
        )
        insert(d.store.sql, {"name": "good", "image": "busybox:local"})
        wait_for(
            lambda: status(d.store.sql).get("good", {}).get("phase") == "running",
            timeout=30,
            message="the good row running beside the bad one",
        )
        wait_for(
            lambda: status(d.store.sql).get("bad", {}).get("phase") == "failed",
            timeout=10,
            message="the bad row failed",
        )
        assert "UTF-8" in status(d.store.sql)["bad"]["message"]
    assert SECRET not in caplog.text
    assert "Could not decode" not in caplog.text


# -- item 9: a row too big to load -------------------------------------------------------------


def test_a_row_over_one_mib_fails_without_being_loaded(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    _sqlite3(
        sqlite_url,
        "INSERT INTO desired_containers (name, image) VALUES ('small', 'busybox:local');"
        "INSERT INTO desired_containers (name, image, env) VALUES ('huge', 'busybox:local', "
        "json_object('BIG', printf('%.*c', 2097152, 'x')));",
    )
    rows = _load(sqlite_url)
    assert rows["small"].spec is not None
    assert rows["huge"].spec is None
    assert rows["huge"].error is not None
    assert rows["huge"].error.startswith("row: the spec is 2,097,")
    assert "at most 1,048,576 (1 MiB)" in rows["huge"].error


# -- item 14: permissions ----------------------------------------------------------------------


def test_the_database_and_its_wal_are_readable_by_their_owner_only(
    tmp_path: pathlib.Path,
) -> None:
    url = f"sqlite:///{tmp_path}/reconciler.db"
    old = os.umask(0o022)
    try:
        assert _cli(url, "db", "upgrade").exit_code == 0
        assert _cli(url, "node", "add", "n1", "unix:///var/run/docker.sock").exit_code == 0
        store = Store.open(url)
        with store.sql.connect() as conn:  # keep a connection open so -wal and -shm exist
            conn.exec_driver_sql("SELECT 1").all()
            files = sorted(tmp_path.glob("reconciler.db*"))
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        store.close()
    finally:
        os.umask(old)
    assert "reconciler.db" in modes and "reconciler.db-wal" in modes
    assert set(modes.values()) == {0o600}, modes


# -- item 15: one line, not a traceback --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("reconciler.db", "is not a database URL", id="no-scheme"),
        pytest.param("sqlite://relative.db", "three slashes", id="sqlite-two-slashes"),
        pytest.param(
            "postgresql+psycopg2://u:s3cretpw@db/x", "driver is not installed", id="no-driver"
        ),
        pytest.param("mysql://u:s3cretpw@db/x", "mysql is not supported", id="mysql"),
        pytest.param("postgresql://u:s3cretpw@db:abc/x", "is not a database URL", id="bad-port"),
    ],
)
def test_an_unusable_database_url_is_one_line(url: str, expected: str) -> None:
    for args in (("get",), ("db", "upgrade"), ("db", "current"), ("run", "--once")):
        result = _cli(url, *args)
        assert result.exit_code == 1, (args, result.output)
        assert expected in result.output
        assert "Traceback" not in result.output and result.exception is not None
        assert isinstance(result.exception, SystemExit)
        assert "s3cretpw" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_apply_of_a_file_that_is_not_utf8_is_one_line(
    sqlite_url: str, tmp_path: pathlib.Path
) -> None:
    migrate.upgrade(sqlite_url)
    path = tmp_path / "latin1.yaml"
    path.write_bytes("- name: caf\xe9\n  image: busybox:local\n".encode("latin-1"))
    result = _cli(sqlite_url, "apply", "-f", str(path))
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {path}: not UTF-8 text (byte 0xe9 at offset 11)"


# -- item 19: an outage is two lines, not thousands --------------------------------------------


@pytest.mark.postgres
def test_a_database_outage_logs_one_line_going_and_one_coming_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sandbox_postgres.SandboxPostgres() as server:
        url = server.create_database("outage")
        migrate.upgrade(url)
        store = Store.open(url)
        store.outage.announce = True  # as the daemon sets it
        caplog.set_level(logging.INFO)
        try:
            store.load_desired(known_generation=None)
            server.stop()
            for _ in range(20):
                with pytest.raises(sa.exc.DBAPIError):
                    store.load_desired(known_generation=None)
                with pytest.raises(sa.exc.DBAPIError):
                    store.list_nodes()
            server.start()
            wait_for(
                lambda: _loads(store), timeout=30, message="the store answering after a restart"
            )
        finally:
            store.close()
    lines = [r for r in caplog.records if r.name == "reconciler.db.store"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING], caplog.text
    assert lines[0].getMessage().startswith("database unreachable: ")
    assert lines[0].getMessage().endswith("; retrying")
    assert lines[1].getMessage().startswith("database is reachable again after ")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]


def _loads(store: Store) -> bool:
    try:
        store.load_desired(known_generation=None)
    except sa.exc.DBAPIError:
        return False
    return True


# -- item 13: log forging and terminal escapes --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("web-1", "web-1", id="plain"),
        pytest.param("café ✓", "café ✓", id="unicode-unchanged"),
        pytest.param("web\n2026-12-03 INFO forged", "web\\n2026-12-03 INFO forged", id="newline"),
        pytest.param("a\rb\tc", "a\\rb\\tc", id="cr-tab"),
        pytest.param("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J", id="osc-and-csi"),
        pytest.param("\x9b31m", "\\x9b31m", id="c1-csi"),
        pytest.param("abc\u202edcba", "abc\\u202edcba", id="bidi-override"),
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert text.escape_controls(raw) == shown


def test_a_newline_in_a_message_cannot_forge_a_log_line() -> None:
    record = logging.LogRecord(
        "reconciler.runtime.executor", logging.INFO, __file__, 1,
        "container %s has been created", ("web\n2026-12-03 00:00:00 ERROR forged",), None,
    )  # fmt: skip
    line = cli_logs.TextFormatter().format(record)
    assert "\n" not in line
    assert line.endswith("container web\\n2026-12-03 00:00:00 ERROR forged has been created")


def test_get_and_node_ls_tables_show_escapes_not_terminal_sequences(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    _sqlite3(
        sqlite_url,
        'INSERT INTO desired_containers (name, image, "user") '
        "VALUES ('web', 'busybox:local', 'x' || char(27) || ']0;pwned' || char(7));"
        "INSERT INTO desired_containers (name, image) "
        "VALUES ('evil' || char(10) || 'forged', 'busybox:local');"
        "INSERT INTO nodes (name, url) VALUES ('n1', 'unix:///x' || char(27) || '[2J');",
    )
    for args in (("get",), ("get", "web"), ("node", "ls")):
        result = _cli(sqlite_url, *args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
    listing = _cli(sqlite_url, "get").output
    assert "evil\\nforged" in listing  # the bad name is shown, escaped, on its own row
    assert "\\x1b" in _cli(sqlite_url, "node", "ls").output
