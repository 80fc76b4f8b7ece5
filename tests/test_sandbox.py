"""The test harness itself: sandboxed engines, TLS, the sandbox CLI and PostgreSQL really work."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import docker
import docker.tls
import pytest
import sqlalchemy as sa
from waiting import wait_for

from sandbox import engines as sandbox_engines
from sandbox import images, postgres, processes, tls

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _state(engine: sandbox_engines.SandboxEngine, container: str) -> str:
    return engine.docker("inspect", "--format", "{{.State.Status}}", container).stdout.strip()


@pytest.fixture
def container_name() -> str:
    return f"rcl-sandbox-{uuid.uuid4().hex[:8]}"


# -- engines ------------------------------------------------------------------------------------
def test_three_engines_answer_with_distinct_ids_and_busybox(
    engines: list[sandbox_engines.SandboxEngine],
) -> None:
    infos = [
        json.loads(images.run_docker(e.url, "info", "--format", "{{json .}}").stdout)
        for e in engines
    ]
    assert len({info["ID"] for info in infos}) == 3
    assert [f"node={e.name}" in info["Labels"] for e, info in zip(engines, infos, strict=True)] == [
        True
    ] * 3
    assert len({e.port for e in engines}) == 3
    for engine in engines:
        assert engine.docker("image", "inspect", images.BUSYBOX_TAG).returncode == 0


def test_a_container_runs_on_one_engine(
    engines: list[sandbox_engines.SandboxEngine], container_name: str
) -> None:
    engine = engines[0]
    engine.docker(
        "run", "-d", "--name", container_name, "--network", "none", images.BUSYBOX_TAG,
        "sleep", "60",
    )  # fmt: skip
    try:
        wait_for(lambda: _state(engine, container_name) == "running", message="running")
        out = engine.docker("exec", container_name, "echo", "hello").stdout
        assert out.strip() == "hello"
        others = engines[1].docker("ps", "-aq", "--filter", f"name={container_name}").stdout
        assert others.strip() == ""
    finally:
        engine.docker("rm", "-f", container_name, check=False)


def test_a_paused_engine_hangs_calls_until_resumed(
    engines: list[sandbox_engines.SandboxEngine],
) -> None:
    engine = engines[1]
    engine.pause()
    try:
        assert engine.is_paused()
        assert not engine.ping(timeout=0.3)
        with pytest.raises(subprocess.TimeoutExpired):
            images.run_docker(engine.url, "version", timeout=1)
    finally:
        engine.resume()
    wait_for(lambda: engine.ping(timeout=0.5), message="resumed engine answers")
    assert images.run_docker(engine.url, "version", timeout=10).returncode == 0


def test_restart_on_the_same_roots_keeps_containers(
    engines: list[sandbox_engines.SandboxEngine], container_name: str
) -> None:
    engine = engines[2]
    # busybox sleep ignores SIGTERM: a short stop timeout keeps dockerd's shutdown quick
    engine.docker(
        "run", "-d", "--name", container_name, "--stop-timeout", "1", images.BUSYBOX_TAG
    )  # fmt: skip
    old_pid, old_id = engine.pid, engine.engine_id()
    try:
        engine.restart()
        assert engine.pid not in (None, old_pid)
        assert engine.engine_id() == old_id
        assert _state(engine, container_name) == "exited"
        engine.docker("start", container_name)
        wait_for(lambda: _state(engine, container_name) == "running", message="running again")
    finally:
        engine.docker("rm", "-f", container_name, check=False)


def test_a_killed_engine_starts_again(engines: list[sandbox_engines.SandboxEngine]) -> None:
    engine = engines[2]
    old_pid = engine.pid
    engine.kill()
    assert not engine.is_running()
    assert not engine.ping(timeout=0.3)
    engine.start()  # a zombie containerd from the killed daemon must not block this
    assert engine.pid not in (None, old_pid)
    assert images.run_docker(engine.url, "version").returncode == 0


def test_tls_engine_accepts_its_ca_and_rejects_another(
    tls_engine: sandbox_engines.SandboxEngine, other_tls: tls.TlsFiles
) -> None:
    assert tls_engine.tls is not None
    good = images.run_docker(tls_engine.url, "version", tls=tls_engine.tls, timeout=20)
    assert good.returncode == 0
    bad = images.run_docker(tls_engine.url, "version", tls=other_tls, timeout=20, check=False)
    assert bad.returncode != 0
    plain = images.run_docker(tls_engine.url, "version", timeout=20, check=False)
    assert plain.returncode != 0
    # The files also work for the docker SDK (Python's ssl). Beware: requests lets the
    # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE environment variables (set on this machine) override
    # the session's CA (docker/docker-py#2433); `trust_env = False` restores the given CA.
    files = tls_engine.tls
    sdk_tls = docker.tls.TLSConfig(  # verify=True, else the SDK ignores ca_cert
        client_cert=(str(files.client_cert), str(files.client_key)),
        ca_cert=str(files.ca_cert),
        verify=True,
    )
    api = docker.APIClient(base_url=tls_engine.url, tls=sdk_tls, version="1.41", timeout=20)
    try:
        api.trust_env = False
        assert api.ping()
    finally:
        api.close()


@pytest.fixture
def cli_dir() -> Iterator[pathlib.Path]:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="rcl-cli-", dir="/tmp"))
    try:
        yield directory
    finally:
        _sandbox_cli("engines", "down", "--dir", str(directory))
        shutil.rmtree(directory, ignore_errors=True)


def _sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


@pytest.mark.engine
def test_sandbox_cli_up_is_idempotent_and_down_stops_by_pid(cli_dir: pathlib.Path) -> None:
    first = _sandbox_cli("engines", "up", "--dir", str(cli_dir), "--count", "1")
    assert first.returncode == 0, first.stderr
    name, url = first.stdout.split()
    assert name == "n1"
    assert images.run_docker(url, "image", "inspect", images.BUSYBOX_TAG).returncode == 0
    pid = json.loads((cli_dir / "state.json").read_text())["engines"][0]["pid"]
    again = _sandbox_cli("engines", "up", "--dir", str(cli_dir), "--count", "1")
    assert again.stdout == first.stdout
    assert json.loads((cli_dir / "state.json").read_text())["engines"][0]["pid"] == pid
    assert _sandbox_cli("engines", "status", "--dir", str(cli_dir)).stdout.split()[2] == "up"
    down = _sandbox_cli("engines", "down", "--dir", str(cli_dir))
    assert down.returncode == 0, down.stderr
    assert not processes.process_alive(pid)
    assert not (cli_dir / "n1").exists()


@pytest.mark.engine
def test_make_runs_engine_listens_on_its_unix_socket_only(cli_dir: pathlib.Path) -> None:
    """`make run`'s engine (issue 10, item 12): a TCP port without TLS would be root for any
    local user, so it is started with --unix-only and registered by its socket."""
    up = _sandbox_cli("engines", "up", "--dir", str(cli_dir), "--count", "1", "--unix-only")
    assert up.returncode == 0, up.stderr
    name, url = up.stdout.split()
    assert name == "n1"
    assert url == f"unix://{cli_dir}/n1/docker.sock"
    state = json.loads((cli_dir / "state.json").read_text())["engines"][0]
    assert state["tcp"] is False
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", state["port"]), timeout=2).close()
    assert "--host=tcp://" not in processes.cmdline(state["pid"])
    assert images.run_docker(url, "image", "inspect", images.BUSYBOX_TAG).returncode == 0
    again = _sandbox_cli("engines", "up", "--dir", str(cli_dir), "--count", "1", "--unix-only")
    assert again.stdout == up.stdout


@pytest.mark.engine
def test_a_pull_from_off_this_machine_never_leaves_it(
    engines: list[sandbox_engines.SandboxEngine],
) -> None:
    """A row may name any image, and the default pull policy pulls what is missing: the sandbox
    engines send every registry request but loopback ones to a proxy nobody listens on."""
    refused = r"proxyconnect tcp: dial tcp 127\.0\.0\.1:9"
    with (
        docker.APIClient(base_url=engines[0].unix_url, version="auto", timeout=30) as api,
        pytest.raises(docker.errors.APIError, match=refused),
    ):
        api.pull("rcl-no-such-image", tag="nope")


# -- databases ----------------------------------------------------------------------------------
def test_postgres_answers_psql(pg: postgres.SandboxPostgres) -> None:
    out = subprocess.run(
        [*pg.psql_args(), "-At", "-c", "select 1"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "1"


def test_postgres_answers_sqlalchemy_in_a_fresh_database(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            assert conn.execute(sa.text("select current_database()")).scalar_one().startswith("t_")
            tables = "select count(*) from information_schema.tables where table_schema='public'"
            assert conn.execute(sa.text(tables)).scalar_one() == 0
    finally:
        engine.dispose()


def test_sqlite_url_is_a_fresh_file(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


# -- waiting ------------------------------------------------------------------------------------
def test_wait_for_returns_the_value_or_fails_with_the_last_one() -> None:
    calls = iter([0, "", "ready"])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.001) == "ready"
    with pytest.raises(AssertionError, match=r"nothing.*last value: 0"):
        wait_for(lambda: 0, timeout=0.05, message="nothing")
