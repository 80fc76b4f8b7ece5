"""Hostile rows (issue 10 items 9 and 10): names ending in a newline, non-finite numbers and
oversized specs are refused by validation with a message naming the field; nothing raises."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import spec
from reconciler.spec import model as spec_model

BASE: dict[str, Any] = {"name": "web-1", "image": "busybox:local"}
MIB = 1024 * 1024


def row(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


HOSTILE_ROWS = [
    pytest.param(row(name="web\n"), "name", "Docker's container name rule", id="name-newline"),
    pytest.param(row(name="web\r\n"), "name", "must match", id="name-crlf"),
    pytest.param(row(node="n1\n"), "node", "node name", id="node-newline"),
    pytest.param(
        row(mounts='[{"source": "data\\n", "target": "/d", "type": "volume"}]'),
        "mounts[0]",
        "volume name must match",
        id="volume-newline",
    ),
    pytest.param(row(env='{"BIG": 1e400}'), "env", "numbers must be finite", id="env-1e400"),
    pytest.param(row(env='{"N": NaN}'), "env", "numbers must be finite", id="env-nan"),
    pytest.param(row(env='{"I": -Infinity}'), "env", "numbers must be finite", id="env-minus-inf"),
    pytest.param(row(labels='{"x": 1e999}'), "labels", "finite", id="label-1e999"),
    pytest.param(row(command='["sleep", 1e400]'), "command", "finite", id="command-1e400"),
    pytest.param(row(memory_bytes="9" * 400), "memory_bytes", "'512m'", id="memory-overflow"),
    pytest.param(
        row(env='{"A": "' + "x" * (20 * MIB) + '"}'),
        "env",
        "too large (the row's spec is 20 MiB; a row may hold at most 1.0 MiB)",
        id="env-20-mib",
    ),
    pytest.param(
        row(command='["' + "y" * MIB + '"]'), "command", "too large", id="command-just-over"
    ),
]


@pytest.mark.parametrize(("raw", "field", "words"), HOSTILE_ROWS)
def test_hostile_row_fails_its_row(raw: dict[str, Any], field: str, words: str) -> None:
    desired = spec.parse_row(raw)
    assert desired.spec is None and desired.error is not None
    assert desired.error.startswith(f"{field}: "), desired.error[:200]
    assert words in desired.error
    assert len(desired.error) < 400, "the message never echoes a huge value"


def test_yaml_values_are_checked_too() -> None:
    """From YAML the values are parsed already: an infinite float and a huge list fail alike."""
    with pytest.raises(spec.SpecError, match="env: value of 'X' must be a finite number"):
        spec.validate_row_strict(row(env={"X": float("inf")}))
    with pytest.raises(spec.SpecError, match="command: too large"):
        spec.validate_row_strict(row(command=["z" * 1000] * 1100))


def test_a_spec_just_under_the_bound_is_accepted() -> None:
    env = '{"A": "' + "x" * (MIB - 200) + '"}'
    desired = spec.parse_row(row(env=env))
    assert desired.spec is not None, desired.error
    assert len(desired.spec.env["A"]) == MIB - 200


def test_a_huge_row_salvages_its_name() -> None:
    """``reconciler get`` shows the message under the row's own name."""
    desired = spec.parse_row(row(env='{"A": "' + "x" * (2 * MIB) + '"}'))
    assert desired.name == "web-1" and desired.error is not None


@pytest.mark.parametrize("name", ["n1\n", "n1 ", "", "-n1", "n1\x00"])
def test_node_name_rule_is_a_full_match(name: str) -> None:
    assert spec_model.NODE_NAME_RE.match(name) is None
    assert spec_model.NODE_NAME_RE.fullmatch(name) is None


@pytest.mark.parametrize("name", ["web\n", "web\nweb", "w"])
def test_container_name_rule_is_a_full_match(name: str) -> None:
    assert spec_model.CONTAINER_NAME_RE.match(name) is None


def test_finite_numbers_still_become_strings() -> None:
    desired = spec.parse_row(row(env='{"PORT": 8080, "RATIO": 0.5, "BIG": 1e300}'))
    assert desired.spec is not None
    assert dict(desired.spec.env) == {"PORT": "8080", "RATIO": "0.5", "BIG": "1e+300"}
