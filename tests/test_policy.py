"""The admission policy (Pod Security "baseline"): pure rules, the CLI, and a real daemon."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from daemons import insert, managed, running_daemon, status
from waiting import wait_for

from reconciler import cli, domain, spec
from reconciler.db import migrate
from reconciler.spec import policy

SOCKET_ERROR = "policy: host path /var/run/docker.sock is not allowed"


def _spec(**fields: Any) -> domain.ContainerSpec:
    return spec.validate_row_strict({"name": "web", "image": "busybox:local", **fields}).spec  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"mounts": ["/:/host"]}, ["host path / is not allowed"], id="root"),
        pytest.param({"mounts": ["/etc:/e"]}, ["host path /etc is not allowed"], id="etc"),
        pytest.param(
            {"mounts": ["/etc/shadow:/s:ro"]}, ["host path /etc/shadow is not allowed"], id="inside"
        ),
        pytest.param(
            {"mounts": ["/var/run/docker.sock:/s"]},
            ["host path /var/run/docker.sock is not allowed"],
            id="socket",
        ),
        pytest.param(
            {"mounts": ["/run/docker.sock:/s"]},
            ["host path /run/docker.sock is not allowed"],
            id="socket-run",
        ),
        pytest.param({"mounts": ["/var:/v"]}, ["host path /var is not allowed"], id="parent"),
        pytest.param({"mounts": ["/run:/r"]}, ["host path /run is not allowed"], id="parent-run"),
        pytest.param(
            {"mounts": ["/srv/../etc:/e"]}, ["host path /etc is not allowed"], id="dot-dot"
        ),
        pytest.param({"mounts": ["/srv/data:/d", "/var/log:/l"]}, [], id="harmless"),
        pytest.param({"mounts": ["etc:/etc"]}, [], id="a-volume-named-etc"),
        pytest.param({"network": "host"}, ["network host is not allowed"], id="host-network"),
        pytest.param(
            {"network": "container:db"},
            ["network container:db (another container's namespaces) is not allowed"],
            id="container-network",
        ),
        pytest.param({"network": "none", "user": "0"}, [], id="root-user-is-baseline"),
    ],
)
def test_baseline(fields: dict[str, Any], expected: list[str]) -> None:
    assert policy.violations(_spec(**fields)) == expected


def test_a_policy_file_widens_and_narrows() -> None:
    wide = policy.parse(
        "allowed_host_paths: [/var/run/docker.sock]\n"
        "allow_host_network: true\n"
        "allowed_images: [127.0.0.1:5000/demo, docker.io/library]\n"
        "max_cpus: 1\n"
        "max_memory_bytes: 64m\n"
    )
    ok = _spec(mounts=["/var/run/docker.sock:/s"], network="host", cpus=1, memory_bytes=64 << 20)
    assert policy.violations(ok, wide) == []
    assert policy.violations(_spec(mounts=["/var:/v"], cpus=1, memory_bytes="64m"), wide) == [
        "host path /var is not allowed"  # the socket alone was allowed, not its parent
    ]
    assert policy.violations(
        _spec(image="evil.example.com/demo/x:1", cpus=2, memory_bytes="1g"), wide
    ) == [
        "image evil.example.com/demo/x:1 is not allowed "
        "(allowed: 127.0.0.1:5000/demo, docker.io/library)",
        "cpus 2 is more than the allowed 1",
        "memory_bytes 1073741824 is more than the allowed 67108864",
    ]
    assert policy.violations(_spec(image="127.0.0.1:5000/demox/y"), wide)[0].startswith(
        "image 127.0.0.1:5000/demox/y is not allowed"
    )  # whole path components only
    assert "cpus must be set (at most 1)" in policy.violations(_spec(), wide)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("allow_host_netwerk: true", "unknown key 'allow_host_netwerk'"),
        ("allowed_host_paths: [relative/path]", "is not an absolute path"),
        ("max_cpus: -1", "max_cpus: must be a positive number"),
        ("allow_host_network: yes please", "must be true or false"),
        ("- a list", "must be a mapping"),
    ],
)
def test_a_bad_policy_file_is_refused_with_its_key(text: str, words: str) -> None:
    with pytest.raises(policy.PolicyError, match=words):
        policy.parse(text, source="p.yaml")


def test_admit_fails_the_row_with_the_policy_message() -> None:
    row = spec.validate_row_strict(
        {"name": "web", "image": "busybox:local", "mounts": ["/var/run/docker.sock:/s"]}
    )
    refused = policy.admit(row)
    assert refused.spec is None and refused.error == SOCKET_ERROR
    assert policy.admit(row, policy.Policy(allowed_host_paths=("/var/run",))) is row


def test_the_example_policy_file_parses() -> None:
    example = pathlib.Path(__file__).parent.parent / "examples" / "policy.yaml"
    parsed = policy.parse(example.read_text(), source=str(example))
    assert parsed != policy.BASELINE


# -- the command line ----------------------------------------------------------------------


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["--database-url", url, *args])


def test_apply_refuses_and_get_reports_at_once(sqlite_url: str, tmp_path: pathlib.Path) -> None:
    migrate.upgrade(sqlite_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            [{"name": "sock", "image": "busybox:local", "mounts": ["/var/run/docker.sock:/s"]}]
        )
    )
    result = _cli(sqlite_url, "apply", "-f", str(bad))
    assert result.exit_code == 1
    assert f"item 1 (sock): {SOCKET_ERROR}" in result.output
    # The same file passes with a policy that allows the socket.
    allow = tmp_path / "policy.yaml"
    allow.write_text("allowed_host_paths: [/var/run/docker.sock]\n")
    result = _cli(sqlite_url, "apply", "-f", str(bad), "--policy", str(allow))
    assert result.exit_code == 0, result.output
    # A row written with plain SQL: `get` tells at once, before any daemon ran.
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO desired_containers (name, image, network) "
                "VALUES ('hostnet', 'busybox:local', 'host')"
            )
        )
    engine.dispose()
    got = json.loads(_cli(sqlite_url, "get", "-o", "json").output)
    messages = {row["name"]: row["message"] for row in got}
    assert messages == {"hostnet": "policy: network host is not allowed", "sock": SOCKET_ERROR}
    widened = _cli(sqlite_url, "get", "sock", "-o", "json", "--policy", str(allow))
    assert json.loads(widened.output)[0]["message"] is None
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_cpus: lots\n")
    result = _cli(sqlite_url, "get", "--policy", str(broken))
    assert result.exit_code == 2 and "max_cpus: must be a positive number" in result.output


# -- a real daemon ---------------------------------------------------------------------------


@pytest.mark.engine
def test_daemon_fails_a_refused_row_and_creates_nothing(engines, sqlite_url, tmp_path):
    tag = uuid.uuid4().hex[:6]
    refused, allowed = f"sock-{tag}", f"hostname-{tag}"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allowed_host_paths: [/etc/hostname]\n")
    with running_daemon(sqlite_url, engines[:1], policy_file=str(policy_file)) as daemon:
        store = daemon.store.sql
        insert(
            store,
            {
                "name": refused,
                "image": "busybox:local",
                "command": ["sleep", "3600"],
                "mounts": ["/var/run/docker.sock:/s"],
            },
            {
                "name": allowed,
                "image": "busybox:local",
                "command": ["sleep", "3600"],
                "mounts": ["/etc/hostname:/h:ro"],
            },
        )
        wait_for(
            lambda: (
                status(store).get(allowed, {}).get("phase") == "running"
                and status(store).get(refused, {}).get("phase") == "failed"
            ),
            timeout=30,
        )
        row = status(store)[refused]
        names = [c["Names"][0] for c in managed(engines[0])]
    assert row["message"] == SOCKET_ERROR
    assert f"/{refused}" not in names and f"/{allowed}" in names
