"""reconciler.spec: rows from SQL (JSON as text) and YAML (parsed) become DesiredContainers.

Every bad field gives a message that names the field; a bad row never raises; the spec hash is
canonical (key order, port/mount order) and moves with every field that shapes the container,
and only with those.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler import domain, spec
from reconciler.spec import model as spec_model

BASE: dict[str, Any] = {"name": "web-1", "image": "busybox:local"}


def row(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


BAD_ROWS = [
    pytest.param({"image": "busybox"}, "name", "is required", id="name-missing"),
    pytest.param(row(name="a"), "name", "Docker's container name rule", id="name-one-char"),
    pytest.param(row(name="my app"), "name", "got 'my app'", id="name-space"),
    pytest.param(row(name="-web"), "name", "must match", id="name-leading-dash"),
    pytest.param(row(name="w" * 254), "name", "at most 253", id="name-too-long"),
    pytest.param(row(name=7), "name", "must be a string, got 7", id="name-number"),
    pytest.param({"name": "web-1"}, "image", "is required", id="image-missing"),
    pytest.param(row(image=""), "image", "must not be empty", id="image-empty"),
    pytest.param(row(image="busy box"), "image", "whitespace", id="image-space"),
    pytest.param(row(command="sleep 1"), "command", "invalid JSON", id="command-not-json"),
    pytest.param(row(command='"sleep 1"'), "command", "list of strings", id="command-string"),
    pytest.param(row(command='["sleep", 1]'), "command", "item 1 must be a string", id="cmd-int"),
    pytest.param(row(entrypoint='{"a": 1}'), "entrypoint", "list of strings", id="entry-object"),
    pytest.param(row(env=""), "env", "invalid JSON (Expecting value at char 0)", id="env-empty"),
    pytest.param(row(env="{oops"), "env", "invalid JSON", id="env-malformed"),
    pytest.param(row(env="[]"), "env", "must be an object", id="env-list"),
    pytest.param(row(env='{"DEBUG": true}'), "env", "'DEBUG' must be a string", id="env-bool"),
    pytest.param(row(env='{"A": null}'), "env", "got null", id="env-null-value"),
    pytest.param(row(env='{"A=B": "1"}'), "env", "without '='", id="env-key-equals"),
    pytest.param(row(labels='{"x": [1]}'), "labels", "'x' must be a string", id="label-list"),
    pytest.param(
        row(labels='{"reconciler.managed": "true"}'), "labels", "reserved", id="label-reserved"
    ),
    pytest.param(row(node="bad node"), "node", "node name", id="node-space"),
    pytest.param(row(node=""), "node", "must not be empty", id="node-empty"),
    pytest.param(
        row(state="paused"),
        "state",
        "must be 'running' or 'stopped', got 'paused'",
        id="state-unknown",
    ),
    pytest.param(row(state=None), "state", "got null", id="state-null"),
    pytest.param(row(ports='{"80": 80}'), "ports", "must be a list", id="ports-object"),
    pytest.param(row(ports='["80:80:80:80"]'), "ports[0]", "must look like", id="port-garbage"),
    pytest.param(row(ports='["80/"]'), "ports[0]", "must look like", id="port-slash"),
    pytest.param(row(ports='["[::1]8080"]'), "ports[0]", "must look like", id="port-ipv6-bad"),
    pytest.param(row(ports="[8080]"), "ports[0]", "quote port strings", id="port-bare-int"),
    pytest.param(
        row(ports='[{"container_port": 0}]'), "ports[0].container_port", ">= 1", id="port-zero"
    ),
    pytest.param(
        row(ports='[{"container_port": 80, "host_port": 70000}]'),
        "ports[0].host_port",
        "<= 65535",
        id="host-port-too-big",
    ),
    pytest.param(
        row(ports='[{"container_port": 80, "protocol": "icmp"}]'),
        "ports[0].protocol",
        "'tcp', 'udp' or 'sctp'",
        id="port-protocol",
    ),
    pytest.param(
        row(ports='[{"container_port": 80, "host_ip": "nowhere"}]'),
        "ports[0].host_ip",
        "IP address",
        id="port-host-ip",
    ),
    pytest.param(
        row(ports='[{"container_port": 80, "hostport": 8080}]'),
        "ports[0].hostport",
        "did you mean 'host_port'",
        id="port-typo",
    ),
    pytest.param(
        row(ports='["8080:80", "8080:81"]'), "ports", "published twice", id="port-duplicate"
    ),
    pytest.param(row(mounts='["data"]'), "mounts[0]", "source:/target", id="mount-short"),
    pytest.param(row(mounts='["data:rel"]'), "mounts[0]", "absolute path", id="mount-rel"),
    pytest.param(
        row(mounts='[{"source": "/srv", "target": "/srv", "type": "volume"}]'),
        "mounts[0]",
        "type 'bind'",
        id="mount-volume-path",
    ),
    pytest.param(
        row(mounts='[{"source": "srv", "target": "/srv", "type": "bind"}]'),
        "mounts[0]",
        "bind source must be an absolute path",
        id="mount-bind-relative",
    ),
    pytest.param(
        row(mounts='[{"source": "d1", "target": "/d", "read_only": "yes"}]'),
        "mounts[0].read_only",
        "true or false",
        id="mount-read-only-string",
    ),
    pytest.param(row(mounts='["a1:/d", "b1:/d"]'), "mounts", "mounted twice", id="mount-dupe"),
    pytest.param(row(network=""), "network", "must not be empty", id="network-empty"),
    pytest.param(row(network=3), "network", "must be a string", id="network-number"),
    pytest.param(row(cpus=0), "cpus", "must be > 0", id="cpus-zero"),
    pytest.param(row(cpus=-1.5), "cpus", "must be > 0", id="cpus-negative"),
    pytest.param(row(cpus="lots"), "cpus", "number of CPUs", id="cpus-text"),
    pytest.param(row(cpus=True), "cpus", "must be a number", id="cpus-bool"),
    pytest.param(row(cpus="inf"), "cpus", "finite", id="cpus-infinite"),
    pytest.param(row(memory_bytes=2**63), "memory_bytes", "<= 9223372036854775807", id="mem-big"),
    pytest.param(row(memory_bytes=1024), "memory_bytes", "6 MiB", id="memory-too-small"),
    pytest.param(row(memory_bytes="1k"), "memory_bytes", "6 MiB", id="memory-size-too-small"),
    pytest.param(row(memory_bytes="lots"), "memory_bytes", "'512m'", id="memory-text"),
    pytest.param(row(memory_bytes=1.5e9), "memory_bytes", "integer", id="memory-float"),
    pytest.param(row(user=""), "user", "must not be empty", id="user-empty"),
    pytest.param(row(workdir="app"), "workdir", "absolute path", id="workdir-relative"),
    pytest.param(row(stop_timeout=-1), "stop_timeout", ">= 0", id="stop-timeout-negative"),
    pytest.param(row(stop_timeout="10"), "stop_timeout", "integer", id="stop-timeout-text"),
    pytest.param(row(stop_timeout=True), "stop_timeout", "integer", id="stop-timeout-bool"),
    pytest.param(row(stop_timeout=2**31), "stop_timeout", "<= 2147483647", id="stop-timeout-big"),
    pytest.param(row(colour="red"), "colour", "unknown field", id="unknown-field"),
    pytest.param(row(imagee="x"), "imagee", "did you mean 'image'", id="field-typo"),
]


@pytest.mark.parametrize(("raw", "field", "words"), BAD_ROWS)
def test_bad_row_names_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    desired = spec.parse_row(raw)

    assert desired.spec is None and desired.spec_hash is None
    assert desired.error is not None
    assert desired.error.startswith(f"{field}: "), desired.error
    assert words in desired.error


@pytest.mark.parametrize(("raw", "field", "words"), BAD_ROWS)
def test_strict_validation_raises_the_same_words(
    raw: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(spec.SpecError) as caught:
        spec.validate_row_strict(raw, json_text=True)

    assert str(caught.value) == spec.parse_row(raw).error
    assert caught.value.problems[0].startswith(f"{field}: ")


def test_every_problem_is_reported() -> None:
    desired = spec.parse_row(row(state="paused", cpus=0, env="{"))

    assert desired.error is not None
    assert {p.split(":")[0] for p in desired.error.split("; ")} == {"state", "cpus", "env"}


def test_broken_row_keeps_what_can_be_salvaged() -> None:
    desired = spec.parse_row(row(node="n2", state="stopped", env="{"))

    assert (desired.name, desired.node, desired.state) == ("web-1", "n2", "stopped")
    assert desired.spec is None


def test_non_mapping_is_an_error_not_an_exception() -> None:
    assert spec.parse_row("web").error == "must be a mapping of field names to values, got 'web'"  # type: ignore[arg-type]


def test_yaml_strings_are_not_json_text() -> None:
    """From YAML a string is a value, not JSON to decode: the message says what to write."""
    with pytest.raises(spec.SpecError, match=r"command: must be a list of strings"):
        spec.validate_row_strict(row(command='["sleep", "1"]'))


def test_defaults_of_a_minimal_row() -> None:
    desired = spec.parse_row(
        row(command=None, env="{}", labels="{}", ports="[]", mounts="[]", state="running")
    )

    assert desired.error is None and desired.spec is not None
    assert desired.state is domain.DesiredState.RUNNING and desired.node is None
    assert desired.spec == domain.ContainerSpec(name="web-1", image="busybox:local")


def test_sql_text_and_yaml_values_give_the_same_container() -> None:
    fields: dict[str, Any] = {
        "command": ["sleep", "3600"],
        "entrypoint": ["/bin/sh", "-c"],
        "env": {"A": "1", "PORT": 8080},
        "labels": {"app": "web"},
        "ports": ["127.0.0.1:8080:80/tcp", {"container_port": 53, "protocol": "udp"}],
        "mounts": ["data:/var/lib/data:ro", {"source": "/srv", "target": "/srv"}],
    }
    scalars = {"node": "n1", "state": "stopped", "network": "none", "cpus": 0.5}
    from_yaml = spec.validate_row_strict(row(**fields, **scalars, memory_bytes="64m"))
    as_text = {key: json.dumps(value) for key, value in fields.items()}
    from_sql = spec.parse_row(row(**as_text, **scalars, memory_bytes=64 * 1024 * 1024))

    assert from_sql == from_yaml
    s = from_yaml.spec
    assert s is not None
    assert s.env == {"A": "1", "PORT": "8080"}
    assert domain.PortBinding(80, "tcp", 8080, "127.0.0.1") in s.ports
    assert domain.PortBinding(53, "udp") in s.ports
    assert domain.Mount("/var/lib/data", "data", "volume", True) in s.mounts
    assert domain.Mount("/srv", "/srv", "bind", False) in s.mounts


@pytest.mark.parametrize(
    ("short", "port"),
    [
        pytest.param("80", domain.PortBinding(80), id="container-only"),
        pytest.param("8080:80", domain.PortBinding(80, "tcp", 8080), id="host-container"),
        pytest.param("8080:80/udp", domain.PortBinding(80, "udp", 8080), id="udp"),
        pytest.param("0.0.0.0::80", domain.PortBinding(80, "tcp", None, "0.0.0.0"), id="ip-only"),
        pytest.param("[::1]:9000:90", domain.PortBinding(90, "tcp", 9000, "::1"), id="ipv6"),
    ],
)
def test_docker_port_strings(short: str, port: domain.PortBinding) -> None:
    desired = spec.validate_row_strict(row(ports=[short]))

    assert desired.spec is not None and desired.spec.ports == (port,)


# -- the spec hash -----------------------------------------------------------------------------


def _spec(**fields: Any) -> domain.ContainerSpec:
    desired = spec.validate_row_strict(row(**fields))
    assert desired.spec is not None
    return desired.spec


FULL: dict[str, Any] = {
    "command": ["sleep", "3600"],
    "entrypoint": ["/bin/sh", "-c"],
    "env": {"A": "1", "B": "2"},
    "labels": {"app": "web", "tier": "front"},
    "ports": ["8080:80", "9090:90/udp"],
    "mounts": ["data:/data", "/srv:/srv:ro"],
    "network": "none",
    "cpus": 0.5,
    "memory_bytes": 64 * 1024 * 1024,
    "user": "1000:1000",
    "workdir": "/app",
    "stop_timeout": 5,
}


def test_hash_is_stable_under_key_and_list_order() -> None:
    shuffled = {
        **{key: FULL[key] for key in reversed(list(FULL))},
        "env": {"B": "2", "A": "1"},
        "labels": {"tier": "front", "app": "web"},
        "ports": ["9090:90/udp", "8080:80"],
        "mounts": ["/srv:/srv:ro", "data:/data"],
    }

    assert spec.spec_hash(_spec(**FULL)) == spec.spec_hash(_spec(**shuffled))
    assert len(spec.spec_hash(_spec(**FULL))) == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("image", "busybox:other", id="image"),
        pytest.param("command", ["sleep", "60"], id="command"),
        pytest.param("command", None, id="command-unset"),
        pytest.param("entrypoint", ["/bin/sh"], id="entrypoint"),
        pytest.param("env", {"A": "1", "B": "3"}, id="env"),
        pytest.param("labels", {"app": "web"}, id="labels"),
        pytest.param("ports", ["8080:80"], id="ports"),
        pytest.param("ports", ["8081:80", "9090:90/udp"], id="host-port"),
        pytest.param("mounts", ["data:/data", "/srv:/srv"], id="mount-read-only"),
        pytest.param("network", "host", id="network"),
        pytest.param("cpus", 1.0, id="cpus"),
        pytest.param("memory_bytes", 128 * 1024 * 1024, id="memory"),
        pytest.param("user", "root", id="user"),
        pytest.param("workdir", "/", id="workdir"),
    ],
)
def test_hash_changes_with_each_shaping_field(field: str, value: Any) -> None:
    assert spec.spec_hash(_spec(**FULL)) != spec.spec_hash(_spec(**{**FULL, field: value}))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"stop_timeout": 60}, id="stop-timeout"),
        pytest.param({"state": "stopped"}, id="state"),
        pytest.param({"node": "n2"}, id="node"),
    ],
)
def test_hash_ignores_what_needs_no_recreate(change: dict[str, Any]) -> None:
    before = spec.validate_row_strict(row(**FULL))
    after = spec.validate_row_strict(row(**{**FULL, **change}))

    assert before != after
    assert before.spec_hash == after.spec_hash


def test_hash_of_a_renamed_spec_is_the_same() -> None:
    s = _spec(**FULL)

    assert spec.spec_hash(dataclasses.replace(s, name="other")) == spec.spec_hash(s)


ENV_TEXT = st.text(alphabet=st.characters(exclude_characters="=\0", exclude_categories=["Cs"]))


@given(st.dictionaries(ENV_TEXT.filter(bool), ENV_TEXT, max_size=8))
def test_hash_ignores_env_insertion_order(env: dict[str, str]) -> None:
    forward = _spec(env=env)
    backward = _spec(env=dict(reversed(list(env.items()))))

    assert spec.spec_hash(forward) == spec.spec_hash(backward)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from([*spec_model.RowModel.model_fields, "extra"]),
        JSONISH | JSONISH.map(json.dumps) | st.text(max_size=12),
    )
)
def test_parse_row_never_raises(raw: dict[str, Any]) -> None:
    desired = spec.parse_row(raw)

    assert (desired.spec is None) == (desired.error is not None)


# -- labels ------------------------------------------------------------------------------------


def test_container_labels_mark_the_container_as_ours() -> None:
    s = _spec(labels={"app": "web"})
    digest = spec.spec_hash(s)

    labels = spec.container_labels(s, digest, node="n1")

    assert labels == {
        "app": "web",
        domain.MANAGED_LABEL: "true",
        domain.NAME_LABEL: "web-1",
        domain.SPEC_HASH_LABEL: digest,
        domain.NODE_LABEL: "n1",
    }
    assert s.labels == {"app": "web"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"env": {"A": "x\0y"}}, id="env-value"),
        pytest.param({"env": '{"A\\u0000": "1"}'}, id="env-key-json"),
        pytest.param({"command": '["a\\u0000"]'}, id="command"),
        pytest.param({"labels": '{"a": "\\ud800"}'}, id="surrogate"),
    ],
)
def test_unstorable_text_is_refused(fields: dict[str, Any]) -> None:
    field = next(iter(fields))
    error = spec.parse_row(row(**fields)).error

    assert error is not None and error.startswith(f"{field}: must not contain ")
