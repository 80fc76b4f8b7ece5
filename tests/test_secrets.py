"""Secrets out of sight: env values and database passwords never reach a log, an event, a status
message, plan output or `get` (unless asked with --show-secrets).

A planted value is driven through success and failure paths, then every channel is grepped.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from daemons import insert, running_daemon, status
from waiting import wait_for

from reconciler import cli, domain, planning, spec
from reconciler.cli import logs
from reconciler.runtime import executor
from reconciler.spec import secrets

PLANTED = "hunter2-" + uuid.uuid4().hex[:8]


def test_specs_and_actions_print_env_keys_only() -> None:
    row = spec.validate_row_strict(
        {"name": "web", "image": "busybox:local", "env": {"DB_PASSWORD": PLANTED, "MODE": "x"}}
    )
    assert row.spec is not None and row.spec_hash is not None
    create = planning.Create("web", domain.NodeName("n1"), row.spec, row.spec_hash, True)
    for text in (repr(row), str(row), repr(row.spec), repr(create), f"{create}", str(row.spec.env)):
        assert PLANTED not in text
        assert "DB_PASSWORD" in text  # keys stay visible: they say what is set
    assert row.spec.env["DB_PASSWORD"] == PLANTED  # values are there for whoever asks
    assert dict(row.spec.env) == {"DB_PASSWORD": PLANTED, "MODE": "x"}


def test_an_unexpected_failure_logs_the_action_without_env_values(caplog) -> None:
    row = spec.validate_row_strict(
        {"name": "web", "image": "busybox:local", "env": {"ANY_NAME": PLANTED}}
    )
    assert row.spec is not None and row.spec_hash is not None
    create = planning.Create("web", domain.NodeName("n1"), row.spec, row.spec_hash, True)

    class Broken:
        client = None
        installation = None
        suspect = False

        def acting_on(self, **_: Any) -> Any:
            raise RuntimeError("a bug")

    caplog.set_level(logging.DEBUG)
    outcome = executor._apply(create, Broken())  # type: ignore[arg-type]
    assert not outcome.ok and "internal error" in outcome.message
    assert "unexpected failure applying" in caplog.text
    assert PLANTED not in caplog.text and PLANTED not in outcome.message


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("DB_PASSWORD", True),
        ("api_token", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SSH_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("MODE", False),
        ("PATH", False),
    ],
)
def test_masked_env(key: str, masked: bool) -> None:
    shown = secrets.masked_env({key: PLANTED})
    assert shown[key] == (secrets.MASK if masked else PLANTED)
    assert secrets.masked_env({key: PLANTED}, show_secrets=True)[key] == PLANTED


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["--database-url", url, *args])


@pytest.mark.engine
def test_a_planted_secret_reaches_no_channel(engines, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    tag = uuid.uuid4().hex[:6]
    env = {"DB_PASSWORD": PLANTED, "PLAIN_LOOKING": PLANTED}
    rows = [
        # success: created and running
        {"name": f"ok-{tag}", "image": "busybox:local", "command": ["sleep", "3600"], "env": env},
        # failure at start: the command does not exist in the image
        {"name": f"nocmd-{tag}", "image": "busybox:local", "command": ["/nonexistent"], "env": env},
        # failure in planning: the image is not there and may not be pulled
        {"name": f"noimg-{tag}", "image": "nowhere/x:1", "pull": "never", "env": env},
        # failure in the admission policy
        {"name": f"sock-{tag}", "image": "busybox:local", "env": env,
         "mounts": ["/var/run/docker.sock:/s"]},
    ]  # fmt: skip
    with running_daemon(sqlite_url, engines[:1]) as daemon:
        store = daemon.store.sql
        insert(store, *rows)
        wait_for(
            lambda: (
                all(
                    status(store).get(r["name"], {}).get("phase") in ("running", "failed")
                    for r in rows
                )
                and status(store)[f"nocmd-{tag}"]["failures"] >= 1
            ),
            timeout=60,
        )
        with store.connect() as conn:
            events = conn.execute(sa.text("SELECT * FROM events")).mappings().all()
            statuses = conn.execute(sa.text("SELECT * FROM container_status")).mappings().all()
        plan_output = _cli(sqlite_url, "plan", "--docker-timeout", "5").output
    get_table = _cli(sqlite_url, "get").output
    get_json = _cli(sqlite_url, "get", "-o", "json").output
    get_yaml = _cli(sqlite_url, "get", "-o", "yaml").output
    assert status(store)[f"ok-{tag}"]["phase"] == "running"
    assert status(store)[f"nocmd-{tag}"]["phase"] == "failed"
    json_logs = "\n".join(logs.JsonFormatter().format(r) for r in caplog.records)
    channels = {
        "log (text)": caplog.text,
        "log (json)": json_logs,
        "events": json.dumps([dict(e) for e in events], default=str),
        "container_status": json.dumps([dict(s) for s in statuses], default=str),
        "plan": plan_output,
        "get": get_table,
    }
    assert "unexpected failure" not in caplog.text
    for channel, text in channels.items():
        assert text.strip(), f"{channel} is empty: the grep would prove nothing"
        assert PLANTED not in text, f"the planted secret leaked into {channel}"
    # get -o json/yaml: a secret-looking key is masked, another key is shown as written.
    got = {r["name"]: r for r in json.loads(get_json)}
    assert got[f"ok-{tag}"]["env"] == {"DB_PASSWORD": "***", "PLAIN_LOOKING": PLANTED}
    assert get_yaml.count(PLANTED) == len(rows)  # PLAIN_LOOKING only, once per row
    shown = json.loads(_cli(sqlite_url, "get", f"ok-{tag}", "-o", "json", "--show-secrets").output)
    assert shown[0]["env"]["DB_PASSWORD"] == PLANTED


def test_a_database_password_never_appears_in_errors_or_logs(tmp_path):
    password = "pg-" + uuid.uuid4().hex
    for host in ("nosuchhost.invalid", "127.0.0.1:1"):
        url = f"postgresql://reconciler:{password}@{host}/reconciler"
        for args in (
            ["-vv", "get"],
            ["-vv", "db", "current"],
            ["run", "--once", "--log-format", "json"],
        ):
            proc = subprocess.run(
                [sys.executable, "-m", "reconciler", "--database-url", url, *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0, out
            assert out.strip()
            assert password not in out, f"{args} on {host} printed the password:\n{out}"
