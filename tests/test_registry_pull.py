"""Images from a real registry: rows whose image is not on their node are pulled there.

A throwaway ``docker-registry`` on loopback (``sandbox.registry``), plain, with basic auth, and
with TLS from the test CA; busybox:local is pushed into it from a sandbox engine, then removed
from every engine, so each engine must pull it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa
from daemons import insert, running_daemon, status
from waiting import wait_for

from sandbox.engines import SandboxEngine
from sandbox.registry import SandboxRegistry, write_docker_config
from sandbox.tls import make_tls_files

pytestmark = pytest.mark.engine

SLEEP = ["sleep", "3600"]


def _has_image(engine: SandboxEngine, ref: str) -> bool:
    return engine.docker("image", "inspect", ref, check=False).returncode == 0


def _drop_image(engines: Sequence[SandboxEngine], ref: str) -> None:
    for e in engines:
        e.docker("rmi", "-f", ref, check=False)


@contextlib.contextmanager
def _pushed(registry: SandboxRegistry, engines: Sequence[SandboxEngine]) -> Iterator[str]:
    ref = registry.push_from(engines[0], "busybox:local", f"demo/busybox:{uuid.uuid4().hex[:6]}")
    _drop_image(engines, ref)
    try:
        yield ref
    finally:
        _drop_image(engines, ref)


def _rows(prefix: str, ref: str, n: int, **extra: object) -> list[dict[str, object]]:
    tag = uuid.uuid4().hex[:6]
    return [
        {"name": f"{prefix}-{tag}-{i}", "image": ref, "command": SLEEP, **extra} for i in range(n)
    ]


def _phases(store: sa.Engine, rows: Sequence[dict[str, object]]) -> dict[str, str | None]:
    found = status(store)
    return {str(r["name"]): found.get(str(r["name"]), {}).get("phase") for r in rows}


def _wait_running(store: sa.Engine, rows: Sequence[dict[str, object]], *, timeout: float) -> None:
    try:
        wait_for(lambda: set(_phases(store, rows).values()) == {"running"}, timeout=timeout)
    except AssertionError:
        found = status(store)
        raise AssertionError(f"not running: {[found.get(str(r['name'])) for r in rows]}") from None


def test_rows_pull_a_missing_image_from_a_plain_registry(engines, sqlite_url):
    with SandboxRegistry() as registry, _pushed(registry, engines) as ref:
        assert not any(_has_image(e, ref) for e in engines)
        with running_daemon(sqlite_url, engines) as daemon:
            rows = _rows("pull", ref, len(engines))
            store = daemon.store.sql
            insert(store, *rows)
            _wait_running(store, rows, timeout=90)
            with store.connect() as conn:
                messages = conn.execute(
                    sa.text("SELECT message FROM events WHERE reason = 'Created'")
                ).scalars()
                created = [m for m in messages if ref in m]
        # Spread over every node, so every engine pulled the image.
        assert all(_has_image(e, ref) for e in engines)
        assert len(created) == len(engines) and all("pulled" in m for m in created), created


def test_basic_auth_with_the_right_password_from_a_docker_config(engines, sqlite_url, tmp_path):
    with (
        SandboxRegistry(users={"alice": "right-horse-battery"}) as registry,
        _pushed(registry, engines) as ref,
    ):
        config = write_docker_config(
            tmp_path / "docker" / "config.json",
            {registry.host: ("alice", "right-horse-battery")},
        )
        with running_daemon(sqlite_url, engines[:1], docker_config=str(config)) as daemon:
            rows = _rows("auth", ref, 1)
            insert(daemon.store.sql, *rows)
            _wait_running(daemon.store.sql, rows, timeout=60)
        assert _has_image(engines[0], ref)


def test_wrong_password_fails_the_row_with_the_registry_message(
    engines, sqlite_url, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-password-4711"
    tls = make_tls_files(tmp_path / "tls")
    with (
        SandboxRegistry(
            users={"alice": "right"}, tls_cert=tls.server_cert, tls_key=tls.server_key
        ) as registry,
        _pushed(registry, engines) as ref,
    ):
        config = write_docker_config(
            tmp_path / "docker" / "config.json", {registry.host: ("alice", wrong)}
        )
        with running_daemon(sqlite_url, engines[:1], docker_config=str(config)) as daemon:
            rows = _rows("badpw", ref, 1)
            name = str(rows[0]["name"])
            insert(daemon.store.sql, *rows)
            row = wait_for(
                lambda: (s := status(daemon.store.sql).get(name)) and s["failures"] and s,
                timeout=60,
                message="the row failed",
            )
        assert not _has_image(engines[0], ref)
    assert row["phase"] == "failed"
    message = row["message"]
    assert f"pull of {ref} failed" in message, message
    assert "unauthorized" in message or "authentication required" in message, message
    assert row["next_attempt_at"] is not None  # backing off
    assert wrong not in caplog.text
    assert wrong not in message


def test_pull_never_requires_the_image_on_the_node(engines, sqlite_url):
    ref = f"127.0.0.1:1/nowhere/busybox:{uuid.uuid4().hex[:6]}"
    with running_daemon(sqlite_url, engines) as daemon:
        rows = _rows("never", ref, 1, pull="never")
        insert(daemon.store.sql, *rows)
        row = wait_for(lambda: status(daemon.store.sql).get(str(rows[0]["name"])), timeout=30)
    assert row["phase"] == "failed"
    assert f"image {ref} not found on" in row["message"]
