"""The SQL contract through the tools people use: the `sqlite3` shell and `psql`.

Only name + image (name + url for nodes) are required; every other column has a server default;
JSON columns take JSON text literals; a malformed value becomes an error on its row only.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from reconciler import domain
from reconciler.db import desired, migrate, nodes
from reconciler.db import engine as db_engine
from sandbox import postgres as sandbox_postgres

Shell = Callable[[str], str]


@pytest.fixture
def sqlite_shell(sqlite_url: str) -> Shell:
    """Run SQL with the `sqlite3` binary on a migrated database; return its output."""
    migrate.upgrade(sqlite_url)
    path = sa.make_url(sqlite_url).database
    assert path is not None

    def run(sql: str) -> str:
        done = subprocess.run(
            ["sqlite3", "-bail", path, sql], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return run


@pytest.fixture
def psql_shell(pg: sandbox_postgres.SandboxPostgres, pg_url: str) -> Shell:
    """Run SQL with the `psql` binary on a migrated database; return unaligned output."""
    migrate.upgrade(pg_url)
    database = sa.make_url(pg_url).database
    assert database is not None

    def run(sql: str) -> str:
        argv = [*pg.psql_args(database), "-At", "-F", "|", "-c", sql]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return run


def _load(url: str) -> list[domain.DesiredContainer]:
    engine = db_engine.make_engine(url)
    try:
        with engine.connect() as conn:
            return desired.load(conn)
    finally:
        engine.dispose()


def _check_minimal_insert(run: Shell, url: str) -> None:
    run("INSERT INTO desired_containers (name, image) VALUES ('web', 'busybox:local')")

    out = run(
        "SELECT name, image, command, entrypoint, env, labels, node, state, ports, mounts,"
        ' network, cpus, memory_bytes, "user", workdir, stop_timeout,'
        " created_at IS NOT NULL, updated_at IS NOT NULL FROM desired_containers"
    )
    fields = out.split("|")
    assert fields[:16] == [
        "web", "busybox:local", "", "", "{}", "{}", "", "running", "[]", "[]",
        "", "", "", "", "", "",
    ]  # fmt: skip
    assert fields[16:] in (["1", "1"], ["t", "t"])  # sqlite3 / psql spelling of true

    (row,) = _load(url)
    assert row.error is None and row.spec == domain.ContainerSpec(name="web", image="busybox:local")
    assert (row.state, row.node) == (domain.DesiredState.RUNNING, None)


def _check_json_literals(run: Shell, url: str) -> None:
    run(
        "INSERT INTO desired_containers (name, image, command, env, labels, ports, mounts, cpus)"
        " VALUES ('api', 'busybox:local', '[\"sleep\", \"3600\"]', '{\"MODE\": \"prod\"}',"
        ' \'{"app": "api"}\', \'["8080:80", {"container_port": 53, "protocol": "udp"}]\','
        " '[\"data:/data:ro\"]', 0.5)"
    )

    (row,) = _load(url)
    assert row.error is None and row.spec is not None
    assert row.spec.command == ("sleep", "3600")
    assert row.spec.env == {"MODE": "prod"} and row.spec.labels == {"app": "api"}
    assert {(p.container_port, p.host_port, p.protocol) for p in row.spec.ports} == {
        (80, 8080, "tcp"),
        (53, None, "udp"),
    }
    assert row.spec.mounts == (domain.Mount("/data", "data", "volume", True),)
    assert row.spec.cpus == 0.5


def _check_node_insert(run: Shell, url: str) -> None:
    run("INSERT INTO nodes (name, url) VALUES ('n1', 'unix:///var/run/docker.sock')")

    assert run("SELECT health, labels, engine_labels, consecutive_failures FROM nodes") == (
        "pending|{}|{}|0"
    )
    engine = db_engine.make_engine(url)
    try:
        with engine.connect() as conn:
            assert nodes.list_nodes(conn) == [
                domain.NodeRow(name=domain.NodeName("n1"), url="unix:///var/run/docker.sock")
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(_check_minimal_insert, id="minimal-insert-defaults"),
        pytest.param(_check_json_literals, id="json-text-literals"),
        pytest.param(_check_node_insert, id="node-insert"),
    ],
)
def test_sqlite3_shell(sqlite_shell: Shell, sqlite_url: str, check: Callable[..., None]) -> None:
    check(sqlite_shell, sqlite_url)


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(_check_minimal_insert, id="minimal-insert-defaults"),
        pytest.param(_check_json_literals, id="json-text-literals"),
        pytest.param(_check_node_insert, id="node-insert"),
    ],
)
def test_psql(psql_shell: Shell, pg_url: str, check: Callable[..., None]) -> None:
    check(psql_shell, pg_url)


def test_malformed_json_is_an_error_on_its_row_only(sqlite_shell: Shell, sqlite_url: str) -> None:
    """SQLite stores any text in a JSON column; the bad row is reported, the others load."""
    sqlite_shell(
        "INSERT INTO desired_containers (name, image, env) VALUES ('bad', 'busybox', '{oops');"
        "INSERT INTO desired_containers (name, image, state) VALUES ('odd', 'busybox', 'paused');"
        "INSERT INTO desired_containers (name, image) VALUES ('good', 'busybox')"
    )

    rows = {row.name: row for row in _load(sqlite_url)}

    assert rows["bad"].spec is None and (rows["bad"].error or "").startswith("env: invalid JSON")
    assert rows["odd"].error == "state: must be 'running' or 'stopped', got 'paused'"
    assert rows["good"].error is None and rows["good"].spec is not None


def test_postgres_rejects_malformed_json_at_insert(psql_shell: Shell, pg_url: str) -> None:
    """On PostgreSQL jsonb refuses bad JSON itself; a wrong *shape* still reaches spec.py."""
    psql_shell("INSERT INTO desired_containers (name, image, env) VALUES ('w1', 'busybox', '[1]')")

    (row,) = _load(pg_url)
    assert row.error == "env: must be an object of variable names to values, got a list"
    with pytest.raises(AssertionError, match="invalid input syntax for type json"):
        psql_shell("INSERT INTO desired_containers (name, image, env) VALUES ('w2', 'b', '{')")


def test_rows_written_by_the_store_read_back_as_plain_json(
    sqlite_shell: Shell, sqlite_url: str
) -> None:
    """What `reconciler apply` writes is canonical JSON text, and unset means SQL NULL."""
    item = domain.DesiredContainer(
        name="w1",
        state=domain.DesiredState.STOPPED,
        node=None,
        spec=domain.ContainerSpec(
            name="w1", image="busybox", env={"A": "1"}, ports=(domain.PortBinding(80, "tcp", 8080),)
        ),
        spec_hash=None,
    )
    engine = db_engine.make_engine(sqlite_url)
    with engine.begin() as conn:
        desired.upsert(conn, [item])
    engine.dispose()

    out = sqlite_shell("SELECT command IS NULL, env, ports, state FROM desired_containers")
    is_null, env, ports, state = out.split("|")
    assert (is_null, json.loads(env), state) == ("1", {"A": "1"}, "stopped")
    assert json.loads(ports) == [{"container_port": 80, "protocol": "tcp", "host_port": 8080}]
