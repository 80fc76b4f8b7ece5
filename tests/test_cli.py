"""The `reconciler` CLI on a real SQLite file: what it writes, what it prints, what it refuses."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result

from reconciler import cli
from reconciler.db import engine as db_engine
from reconciler.db import migrate

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def run(sqlite_url: str) -> Any:
    """Invoke the CLI against this test's database, like `reconciler --database-url URL ...`."""
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(cli.main, ["--database-url", sqlite_url, *args], input=stdin)

    return invoke


@pytest.fixture
def db(run: Any, sqlite_url: str) -> str:
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    return sqlite_url


def _count(url: str, table: str) -> int:
    engine = db_engine.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _sql(url: str, statement: str) -> None:
    engine = db_engine.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def _yaml(tmp_path: pathlib.Path, items: list[dict[str, Any]]) -> str:
    path = tmp_path / "desired.yaml"
    path.write_text(yaml.safe_dump(items))
    return str(path)


# -- db ----------------------------------------------------------------------------------------


def test_db_upgrade_current_downgrade(run: Any, sqlite_url: str) -> None:
    head = migrate.head()

    assert "(empty)" in run("db", "current").stdout
    assert f"upgraded from (empty) to {head}" in run("db", "upgrade").stdout
    assert "already at" in run("db", "upgrade").stdout
    identity = migrate.installation(sqlite_url)
    assert identity is not None and len(identity) == 36  # a UUID, made by the upgrade
    assert run("db", "current").stdout.strip() == f"{head} (head), installation {identity}"
    assert run("db", "downgrade", "base").exit_code == 0
    assert migrate.current(sqlite_url) is None


def test_db_upgrade_to_unknown_revision(run: Any) -> None:
    result = run("db", "upgrade", "nope")

    assert result.exit_code == 1 and "nope" in result.stderr


# -- nodes -------------------------------------------------------------------------------------


def _nodes(run: Any) -> dict[str, dict[str, Any]]:
    result = run("node", "ls", "-o", "json")
    assert result.exit_code == 0, result.stderr
    return {n["name"]: n for n in json.loads(result.stdout)}


def test_node_add_ls_cordon_rm(run: Any, db: str) -> None:
    sock = "unix:///tmp/n1/docker.sock"
    assert run("node", "add", "n1", sock, "--label", "zone=a", "--label", "disk=ssd").exit_code == 0
    assert run("node", "add", "n2", "tcp://127.0.0.1:23801").exit_code == 0

    listed = _nodes(run)
    assert listed["n1"]["url"] == sock and listed["n1"]["labels"] == {"zone": "a", "disk": "ssd"}
    assert listed["n1"]["health"] == "pending" and listed["n1"]["schedulable"] is True

    assert run("node", "cordon", "n1").exit_code == 0
    assert _nodes(run)["n1"]["schedulable"] is False
    assert run("node", "uncordon", "n1").exit_code == 0
    assert _nodes(run)["n1"]["schedulable"] is True

    table = run("node", "ls").stdout
    assert "HEALTH" in table and sock in table and "pending" in table

    assert run("node", "rm", "n1").exit_code == 0
    assert set(_nodes(run)) == {"n2"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["n1", "http://x"], "unix://, tcp:// or ssh://", id="scheme"),
        pytest.param(["n1", "tcp://10.1.2.3:2375"], "--allow-insecure-tcp", id="plain-tcp"),
        pytest.param(["bad name", "unix:///x.sock"], "NAME", id="name"),
        pytest.param(["n1", "unix:///x.sock", "--label", "novalue"], "KEY=VALUE", id="label"),
    ],
)
def test_node_add_refuses_bad_input(run: Any, db: str, args: list[str], words: str) -> None:
    result = run("node", "add", *args)

    assert result.exit_code == 2 and words in result.stderr
    assert _count(db, "nodes") == 0


def test_node_add_insecure_tcp_when_asked(run: Any, db: str) -> None:
    assert run("node", "add", "n1", "tcp://10.1.2.3:2375", "--allow-insecure-tcp").exit_code == 0
    assert _count(db, "nodes") == 1


def test_node_add_with_tls_stores_absolute_paths(run: Any, db: str, tmp_path: pathlib.Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    tls = ["--tls-ca", "ca.pem", "--tls-cert", "cert.pem", "--tls-key", "key.pem"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = run("node", "add", "n1", "tcp://10.1.2.3:2376", *tls)

    assert result.exit_code == 0, result.stderr
    engine = db_engine.make_engine(db)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT tls_ca_cert, tls_client_key FROM nodes")).one()
    engine.dispose()
    assert tuple(stored) == (str(tmp_path / "ca.pem"), str(tmp_path / "key.pem"))


def test_node_errors(run: Any, db: str) -> None:
    assert run("node", "add", "n1", "unix:///x.sock").exit_code == 0

    again = run("node", "add", "n1", "unix:///y.sock")
    assert again.exit_code == 1 and "already exists" in again.stderr
    for command in ("rm", "cordon", "uncordon"):
        result = run("node", command, "ghost")
        assert result.exit_code == 1 and "no node named 'ghost'" in result.stderr


# -- apply / get / delete ----------------------------------------------------------------------


def _get(run: Any, *args: str, fmt: str = "json") -> list[dict[str, Any]]:
    result = run("get", *args, "-o", fmt)
    assert result.exit_code == 0, result.stderr
    loaded = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert isinstance(loaded, list)
    return loaded


def test_apply_the_example_then_get(run: Any, db: str) -> None:
    example = str(ROOT / "examples" / "desired.yaml")
    written = yaml.safe_load(pathlib.Path(example).read_text())

    first = run("apply", "-f", example)
    again = run("apply", "-f", example)

    assert first.exit_code == 0, first.stderr
    assert (
        first.stdout.splitlines()[-1] == f"created {len(written)}, updated 0, unchanged 0, pruned 0"
    )
    assert (
        again.stdout.splitlines()[-1] == f"created 0, updated 0, unchanged {len(written)}, pruned 0"
    )
    got = _get(run)
    assert [g["name"] for g in got] == sorted(item["name"] for item in written)
    assert all(g["image"] == "busybox:local" and g["phase"] is None for g in got)
    assert _get(run, fmt="yaml") == got


def test_apply_updates_and_get_shows_status(run: Any, db: str, tmp_path: pathlib.Path) -> None:
    run("node", "add", "n1", "unix:///x.sock")
    items = [{"name": "w1", "image": "busybox", "node": "n1"}, {"name": "w2", "image": "busybox"}]
    assert run("apply", "-f", _yaml(tmp_path, items)).exit_code == 0
    _sql(db, "INSERT INTO container_status (name, node, container_id, phase, message) VALUES "
             f"('w1', 'n1', '{'ab' * 32}', 'running', 'started')")  # fmt: skip

    items[1]["state"] = "stopped"
    result = run("apply", "-f", _yaml(tmp_path, items))

    assert result.stdout.splitlines() == [
        "w2 updated",
        "created 0, updated 1, unchanged 1, pruned 0",
    ]
    (w1,) = _get(run, "w1")
    assert (w1["wanted_node"], w1["phase"], w1["node"], w1["message"]) == (
        "n1",
        "running",
        "n1",
        "started",
    )
    assert w1["container_id"] == "ab" * 32 and w1["container"] == "ab" * 6
    assert "abababababab " in run("get").stdout  # the table shows the short id
    assert _get(run, "w2")[0]["state"] == "stopped"


@pytest.mark.parametrize(
    ("item", "words"),
    [
        pytest.param({"env": ["A=1"]}, "env: must be an object", id="env-list"),
        pytest.param({"cpus": "many"}, "cpus: must be a number of CPUs", id="cpus"),
        pytest.param({"state": "paused"}, "state: must be 'running' or 'stopped'", id="state"),
        pytest.param({"command": "sleep 1"}, "command: must be a list of strings", id="command"),
        pytest.param({"ports": [{"container_port": "x"}]}, "ports[0].container_port", id="port"),
        pytest.param({"node": "ghost"}, "node: unknown node 'ghost'", id="unknown-node"),
        pytest.param({"name": "w1"}, "name: also used by item 1", id="duplicate-name"),
        pytest.param({"colour": "red"}, "colour: unknown field", id="unknown-field"),
    ],
)
def test_apply_refuses_a_bad_item_and_writes_nothing(
    run: Any, db: str, tmp_path: pathlib.Path, item: dict[str, Any], words: str
) -> None:
    items = [{"name": "w1", "image": "busybox"}, {"name": "w2", "image": "busybox", **item}]

    result = run("apply", "-f", _yaml(tmp_path, items))

    assert result.exit_code == 1
    assert "item 2 (w" in result.stderr and words in result.stderr, result.stderr
    assert _count(db, "desired_containers") == 0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("- {name: [", "invalid YAML", id="malformed"),
        pytest.param("name: w1\nimage: busybox\n", "must be a YAML list", id="not-a-list"),
        pytest.param("", "got null", id="empty"),
    ],
)
def test_apply_refuses_bad_yaml(run: Any, db: str, text: str, words: str) -> None:
    result = run("apply", "-f", "-", stdin=text)

    assert result.exit_code == 1 and words in result.stderr
    assert _count(db, "desired_containers") == 0


def test_apply_prune(run: Any, db: str, tmp_path: pathlib.Path) -> None:
    images = {"name": "w1", "image": "busybox"}, {"name": "w2", "image": "busybox"}
    run("apply", "-f", _yaml(tmp_path, list(images)))
    _sql(db, "INSERT INTO desired_containers (name, image) VALUES ('by-hand', 'busybox')")

    kept = run("apply", "-f", _yaml(tmp_path, [images[0]]))
    pruned = run("apply", "--prune", "-f", _yaml(tmp_path, [images[0]]))

    assert kept.stdout.splitlines()[-1].endswith("pruned 0")
    assert pruned.stdout.splitlines()[-1] == "created 0, updated 0, unchanged 1, pruned 2"
    assert [g["name"] for g in _get(run)] == ["w1"]


def test_get_shows_a_malformed_row_and_an_unknown_name(run: Any, db: str) -> None:
    _sql(db, "INSERT INTO desired_containers (name, image, env) VALUES ('bad', 'busybox', '{')")

    (bad,) = _get(run)
    missing = run("get", "ghost")

    assert bad["message"].startswith("invalid row: env: invalid JSON")
    assert missing.exit_code == 1 and "no desired container named 'ghost'" in missing.stderr


def test_delete(run: Any, db: str, tmp_path: pathlib.Path) -> None:
    items = [{"name": n, "image": "busybox"} for n in ("w1", "w2", "w3")]
    run("apply", "-f", _yaml(tmp_path, items))

    refused = run("delete", "w1", "ghost")
    deleted = run("delete", "w1", "w2")

    assert refused.exit_code == 1 and "'ghost'" in refused.stderr
    assert deleted.exit_code == 0 and deleted.stdout.splitlines() == ["w1 deleted", "w2 deleted"]
    assert [g["name"] for g in _get(run)] == ["w3"]


# -- a schema that is behind -------------------------------------------------------------------

ROW_COMMANDS = [
    pytest.param(["get"], id="get"),
    pytest.param(["node", "ls"], id="node-ls"),
    pytest.param(["node", "add", "n1", "unix:///x.sock"], id="node-add"),
    pytest.param(["node", "cordon", "n1"], id="node-cordon"),
    pytest.param(["delete", "w1"], id="delete"),
    pytest.param(["apply", "-f", str(ROOT / "examples" / "desired.yaml")], id="apply"),
    pytest.param(["run"], id="run"),
    pytest.param(["run", "--once"], id="run-once"),
    pytest.param(["plan"], id="plan"),
]


@pytest.mark.parametrize("args", ROW_COMMANDS)
def test_commands_refuse_a_missing_schema(run: Any, sqlite_url: str, args: list[str]) -> None:
    result = run(*args)

    assert result.exit_code == 1
    assert "run `reconciler db upgrade`" in result.stderr
    assert not pathlib.Path(sa.make_url(sqlite_url).database or "").exists()


@pytest.mark.parametrize("args", ROW_COMMANDS)
def test_commands_refuse_an_older_schema(run: Any, sqlite_url: str, args: list[str]) -> None:
    migrate.upgrade(sqlite_url, "+1")
    first = migrate.current(sqlite_url)
    assert first != migrate.head(), "this test needs a revision older than head"

    result = run(*args)

    assert result.exit_code == 1
    assert f"at revision {first} " in result.stderr
    assert "run `reconciler db upgrade`" in result.stderr


def test_unreachable_database_is_one_line_not_a_traceback() -> None:
    result = CliRunner().invoke(
        cli.main, ["--database-url", "postgresql://postgres@127.0.0.1:1/none", "get"]
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: database error:") and "Traceback" not in result.stderr
