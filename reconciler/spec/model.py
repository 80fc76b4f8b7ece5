"""The pydantic models behind ``reconciler.spec``: one desired row, a port, a mount.

Field names are the SQL column names of ``desired_containers``. Every field has a ``before``
validator that either returns a clean value or raises an error whose words are meant for the
person who wrote the row ("must be 'running' or 'stopped', got 'paused'"); ``spec`` prefixes the
field path. Strict mode is the backstop: no silent coercion besides the friendly ones listed in
``reconciler.spec``'s docstring. Validation context ``{"json_text": True}`` means the row came
from SQL and string values of JSON columns are JSON text to parse.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic_core import PydanticCustomError

from reconciler import domain

#: Docker's container (and volume) name rule: at least two characters.
CONTAINER_NAME_PATTERN = "[a-zA-Z0-9][a-zA-Z0-9_.-]+"
#: Node names: the same characters, one is enough.
NODE_NAME_PATTERN = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
# Anchored with \Z, not $: "$" also matches before a final newline, and "web\n" is no name.
# Match them with ``fullmatch``; ``match`` is safe too.
CONTAINER_NAME_RE = re.compile(CONTAINER_NAME_PATTERN + r"\Z")
NODE_NAME_RE = re.compile(NODE_NAME_PATTERN + r"\Z")
#: The most a row's spec may hold, in bytes (its text and JSON values, as written): larger rows
#: fail with a message instead of reaching Docker (a 20 MiB env value once took an engine from
#: 89 to 243 MiB before it refused it).
MAX_SPEC_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 253
#: Docker refuses a memory limit below 6 MiB.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
RESERVED_LABEL_PREFIX = "reconciler."
JSON_FIELDS = (
    "command",
    "entrypoint",
    "env",
    "labels",
    "ports",
    "mounts",
    "healthcheck",
    "constraints",
)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE | re.ASCII)
#: The largest values the SQL columns (BIGINT, INTEGER) can hold.
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def fail(reason: str) -> PydanticCustomError:
    # The reason goes through the context so braces in user input are never format fields.
    return PydanticCustomError("reconciler", "{reason}", {"reason": reason})


def show(value: object) -> str:
    """A short rendering of a wrong value for an error message, JSON-ish."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decoded(value: Any, info: pydantic.ValidationInfo) -> Any:
    """Parse JSON text when the row came from SQL; YAML values are already parsed."""
    if not (isinstance(value, str) and info.context and info.context.get("json_text")):
        return value
    try:
        return json.loads(value, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise fail(f"invalid JSON ({e.msg} at char {e.pos})") from None
    except _NotFinite as e:
        raise fail(f"must not hold {e.args[0]}: numbers must be finite") from None


class _NotFinite(ValueError):
    """A JSON number that is not a finite float (``1e400``, ``NaN``, ``Infinity``)."""


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite(show(text))
    return number


def _no_constant(text: str) -> float:
    raise _NotFinite(text)


def _text(value: Any, *, optional: bool = True) -> str:
    if not isinstance(value, str):
        raise fail(f"must be a string, got {show(value)}")
    if not value:
        raise fail("must not be empty" + (" (use null to leave it unset)" if optional else ""))
    return value


def _no_space(value: Any, *, optional: bool = True) -> str:
    text = _text(value, optional=optional)
    if any(c.isspace() for c in text):
        raise fail(f"must not contain whitespace, got {show(text)}")
    return text


def _string_map(value: Any, *, what: str) -> dict[str, str]:
    """An object of string keys to string values; numbers are turned into strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"must be an object of {what}, got {show(value)}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise fail(f"key {show(key)} must be a non-empty string without '='")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise fail(f"value of {key!r} must be a string (quote it), got {show(item)}")
        if isinstance(item, float) and not math.isfinite(item):
            raise fail(f"value of {key!r} must be a finite number or a string, got {show(item)}")
        result[key] = item if isinstance(item, str) else json.dumps(item)
    return result


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)


class PortModel(_Strict):
    """One published port; also accepts ``"[host_ip:][host_port:]container_port[/protocol]"``."""

    container_port: int = pydantic.Field(ge=1, le=65535)
    host_port: int | None = pydantic.Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    host_ip: str | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 22:22 as the base-60 number 1342.
            raise fail(
                f'must be an object or a string such as "8080:80", got {value} '
                "(quote port strings in YAML)"
            )
        return parse_port(value) if isinstance(value, str) else value

    @pydantic.field_validator("host_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise fail(f"must be an IP address, got {show(value)}") from None


def parse_port(text: str) -> dict[str, Any]:
    """``"127.0.0.1:8080:80/udp"`` → fields of :class:`PortModel` (Docker's ``-p`` syntax)."""
    bad = fail(f"must look like [host_ip:][host_port:]container_port[/protocol], got {text!r}")
    rest, slash, protocol = text.partition("/")
    if slash and not protocol:
        raise bad
    host_ip: str | None = None
    if rest.startswith("["):  # [::1]:8080:80
        closing = rest.find("]:")
        if closing < 0:
            raise bad
        host_ip, rest = rest[1:closing], rest[closing + 2 :]
    parts = rest.split(":")
    if host_ip is None and len(parts) == 3:
        host_ip = parts.pop(0)
    if len(parts) > 2 or not parts[-1] or not all(_is_number(p) for p in parts if p):
        raise bad
    host_port = int(parts[0]) if len(parts) == 2 and parts[0] else None
    port: dict[str, Any] = {"container_port": int(parts[-1]), "host_port": host_port}
    if host_ip:
        port["host_ip"] = host_ip
    if protocol:
        port["protocol"] = protocol
    return port


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


class MountModel(_Strict):
    """A volume or bind mount; also accepts ``"source:/target[:ro|rw]"``.

    Without ``type``, a source that is an absolute path is a bind, anything else a volume name.
    """

    source: str
    target: str
    type: Literal["volume", "bind"]
    read_only: bool = False

    @pydantic.model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = parse_mount(value)
        if isinstance(value, dict) and "type" not in value and isinstance(value.get("source"), str):
            value = {**value, "type": "bind" if value["source"].startswith("/") else "volume"}
        return value

    @pydantic.model_validator(mode="after")
    def _paths(self) -> MountModel:
        if not self.target.startswith("/"):
            raise fail(f"target must be an absolute path, got {self.target!r}")
        if self.type == "bind" and not self.source.startswith("/"):
            raise fail(f"a bind source must be an absolute path, got {self.source!r}")
        if self.type == "volume" and not CONTAINER_NAME_RE.fullmatch(self.source):
            raise fail(
                f"volume name must match {CONTAINER_NAME_PATTERN} (a host path needs "
                f"type 'bind'), got {self.source!r}"
            )
        return self


def parse_mount(text: str) -> dict[str, Any]:
    """``"data:/var/lib/data:ro"`` → fields of :class:`MountModel` (Docker's ``-v`` syntax)."""
    parts = text.split(":")
    if (
        len(parts) not in (2, 3)
        or not all(parts)
        or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
    ):
        raise fail(f"must look like source:/target[:ro|rw], got {text!r}")
    return {"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}


class HealthcheckModel(_Strict):
    """``healthcheck``: Docker's health check; ``test`` as Docker takes it (``["CMD", ...]``,
    ``["CMD-SHELL", "..."]`` or ``["NONE"]``; a plain string means ``CMD-SHELL``)."""

    test: list[str]
    interval_seconds: float | None = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    timeout_seconds: float | None = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    retries: int | None = pydantic.Field(default=None, ge=0, le=MAX_INTEGER)
    start_period_seconds: float | None = pydantic.Field(default=None, ge=0, allow_inf_nan=False)

    @pydantic.field_validator("test", mode="before")
    @classmethod
    def _test(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            return ["CMD-SHELL", _text(value, optional=False)]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise fail(f'must be a list of strings such as ["CMD", "true"], got {show(value)}')
        if value[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise fail(f"must start with 'CMD', 'CMD-SHELL' or 'NONE', got {show(value[0])}")
        return value

    @pydantic.field_validator(
        "interval_seconds", "timeout_seconds", "start_period_seconds", mode="before"
    )
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RowModel(_Strict):
    """One desired container as written by a person; field names are the SQL column names."""

    name: str
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = pydantic.Field(default_factory=dict)
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    node: str | None = None
    state: domain.DesiredState = domain.DesiredState.RUNNING
    ports: list[PortModel] = pydantic.Field(default_factory=list)
    mounts: list[MountModel] = pydantic.Field(default_factory=list)
    restart: domain.RestartPolicy = domain.RestartPolicy.ALWAYS
    healthcheck: HealthcheckModel | None = None
    network: str | None = None
    cpus: float | None = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    memory_bytes: int | None = pydantic.Field(default=None, ge=MIN_MEMORY_BYTES, le=MAX_BIGINT)
    user: str | None = None
    workdir: str | None = None
    stop_timeout: int | None = pydantic.Field(default=None, ge=0, le=MAX_INTEGER)
    pull: domain.PullPolicy = domain.PullPolicy.MISSING
    constraints: list[str] = pydantic.Field(default_factory=list)
    reschedule: domain.Reschedule = domain.Reschedule.ON_NODE_FAILURE

    @pydantic.field_validator("pull", mode="before")
    @classmethod
    def _pull(cls, value: Any) -> domain.PullPolicy:
        if value is None:
            return domain.PullPolicy.MISSING  # SQL NULL: the default
        if value not in ("missing", "always", "never"):
            raise fail(f"must be 'missing', 'always' or 'never', got {show(value)}")
        return domain.PullPolicy(value)

    @pydantic.field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        name = _text(value, optional=False)
        if len(name) > MAX_NAME_LENGTH or not CONTAINER_NAME_RE.fullmatch(name):
            raise fail(
                f"must match {CONTAINER_NAME_PATTERN} (Docker's container name rule, "
                f"at most {MAX_NAME_LENGTH} characters), got {show(name)}"
            )
        return name

    @pydantic.field_validator("image", "network", "user", mode="before")
    @classmethod
    def _word(cls, value: Any, info: pydantic.ValidationInfo) -> str | None:
        optional = info.field_name != "image"
        if value is None and optional:
            return None
        return _no_space(value, optional=optional)

    @pydantic.field_validator("command", "entrypoint", mode="before")
    @classmethod
    def _argv(cls, value: Any, info: pydantic.ValidationInfo) -> list[str] | None:
        value = _decoded(value, info)
        if value is None:
            return None
        if not isinstance(value, list):
            raise fail(f'must be a list of strings such as ["sleep", "3600"], got {show(value)}')
        for i, arg in enumerate(value):
            if not isinstance(arg, str):
                raise fail(f"item {i} must be a string (quote it), got {show(arg)}")
        return value

    @pydantic.field_validator("env", "labels", mode="before")
    @classmethod
    def _maps(cls, value: Any, info: pydantic.ValidationInfo) -> dict[str, str]:
        what = "variable names to values" if info.field_name == "env" else "label names to values"
        result = _string_map(_decoded(value, info), what=what)
        if info.field_name == "labels":
            for key in result:
                if key.startswith(RESERVED_LABEL_PREFIX):
                    raise fail(f"{key!r}: label names starting with 'reconciler.' are reserved")
        return result

    @pydantic.field_validator("ports", "mounts", mode="before")
    @classmethod
    def _lists(cls, value: Any, info: pydantic.ValidationInfo) -> list[Any]:
        value = _decoded(value, info)
        if value is None:
            return []
        if not isinstance(value, list):
            raise fail(f"must be a list, got {show(value)}")
        return value

    @pydantic.field_validator("node", mode="before")
    @classmethod
    def _node(cls, value: Any) -> str | None:
        if value is None:
            return None
        node = _text(value)
        if len(node) > MAX_NAME_LENGTH or not NODE_NAME_RE.fullmatch(node):
            raise fail(f"must be a node name ({NODE_NAME_PATTERN}) or null, got {show(node)}")
        return node

    @pydantic.field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, value: Any, info: pydantic.ValidationInfo) -> list[str]:
        value = _decoded(value, info)
        if value is None:
            return []
        if not isinstance(value, list):
            raise fail(f'must be a list such as ["node.labels.zone==a"], got {show(value)}')
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise fail(f"item {i} must be a string, got {show(item)}")
            try:
                parse_constraint(item)
            except ValueError as e:
                raise fail(f"item {i}: {e}") from None
        return [str(parse_constraint(item)) for item in value]

    @pydantic.field_validator("reschedule", mode="before")
    @classmethod
    def _reschedule(cls, value: Any) -> domain.Reschedule:
        if value is None:
            return domain.Reschedule.ON_NODE_FAILURE
        if value not in ("on-node-failure", "never"):
            raise fail(f"must be 'on-node-failure' or 'never', got {show(value)}")
        return domain.Reschedule(value)

    @pydantic.field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: Any) -> domain.DesiredState:
        if value not in ("running", "stopped"):
            raise fail(f"must be 'running' or 'stopped', got {show(value)}")
        return domain.DesiredState(value)

    @pydantic.field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail(f"must be a number of CPUs such as 0.5, got {show(value)}") from None
        return value

    @pydantic.field_validator("memory_bytes", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        value = parse_size(value) if isinstance(value, str) else value
        if isinstance(value, int) and not isinstance(value, bool) and value < MIN_MEMORY_BYTES:
            raise fail(
                f"must be at least {MIN_MEMORY_BYTES} bytes (6 MiB, Docker's minimum), got {value}"
            )
        return value

    @pydantic.field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not _text(value).startswith("/"):
            raise fail(f"must be an absolute path, got {show(value)}")
        return str(value)

    @pydantic.field_validator("restart", mode="before")
    @classmethod
    def _restart(cls, value: Any) -> domain.RestartPolicy:
        if value is None:
            return domain.RestartPolicy.ALWAYS  # SQL NULL: the default
        if value not in ("always", "on-failure", "never"):
            raise fail(f"must be 'always', 'on-failure' or 'never', got {show(value)}")
        return domain.RestartPolicy(value)

    @pydantic.field_validator("healthcheck", mode="before")
    @classmethod
    def _healthcheck(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        return _decoded(value, info)

    @pydantic.model_validator(mode="after")
    def _storable_text(self) -> RowModel:
        # Docker cannot take these and PostgreSQL cannot store them in text or jsonb.
        for field, value in self.model_dump().items():
            problem = _unstorable(value)
            if problem:
                raise fail(f"{field}: must not contain {problem}")
        return self

    @pydantic.model_validator(mode="after")
    def _no_duplicates(self) -> RowModel:
        published = [(p.host_ip, p.host_port, p.protocol) for p in self.ports if p.host_port]
        for ip, port, protocol in published:
            if published.count((ip, port, protocol)) > 1:
                raise fail(f"ports: host port {port}/{protocol} is published twice")
        targets = [m.target for m in self.mounts]
        for target in targets:
            if targets.count(target) > 1:
                raise fail(f"mounts: target {target!r} is mounted twice")
        return self


_CONSTRAINT_RE = re.compile(r"\s*([a-zA-Z0-9_.\-/]+)\s*(==|!=)\s*(.*?)\s*\Z", re.ASCII | re.DOTALL)
_CONSTRAINT_KEYS = ("node.name", "node.labels.<k>", "engine.labels.<k>")


def parse_constraint(text: str) -> domain.Constraint:
    """``"node.labels.zone==a"`` → ``Constraint("node.labels.zone", "a")``; ValueError with
    words for people when the expression is malformed or its key unknown."""
    found = _CONSTRAINT_RE.fullmatch(text)
    if found is None:
        raise ValueError(f"must look like KEY==VALUE or KEY!=VALUE, got {show(text)}")
    key, op, value = found.groups()
    known = key == "node.name" or (
        key.startswith(("node.labels.", "engine.labels."))
        and key.count(".") >= 2
        and key.split(".", 2)[2] != ""
    )
    if not known:
        raise ValueError(f"unknown key {key!r}; known: {', '.join(_CONSTRAINT_KEYS)}")
    if not value or "==" in value or "!=" in value:
        raise ValueError(f"must look like KEY==VALUE or KEY!=VALUE, got {show(text)}")
    return domain.Constraint(key, value, op == "==")


def _unstorable(value: object) -> str | None:
    """What makes ``value`` (or a string inside it) impossible to store or send, if anything."""
    if isinstance(value, str):
        if "\0" in value:
            return "a NUL character"
        if any("\ud800" <= c <= "\udfff" for c in value):
            return "an unpaired surrogate (invalid Unicode)"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    if isinstance(items, list):
        return next((p for p in map(_unstorable, items) if p), None)
    return None


def parse_size(text: str) -> int:
    """``"512m"`` → 536870912 (binary units k, m, g, t, as ``docker run --memory``)."""
    match = _SIZE_RE.fullmatch(text)
    size = float(match[1]) * _SIZE_UNITS[match[2].lower()] if match else math.nan
    if not math.isfinite(size):
        raise fail(f"must be a number of bytes or a size such as '512m', got {show(text)}")
    return int(size)


def spec_size(raw: Mapping[str, Any]) -> tuple[int, str]:
    """(bytes of spec, the largest field) of a raw row: its text as UTF-8, other values as JSON.

    Counts what was written (JSON text from SQL, or values from YAML), before any parsing, so a
    huge row is refused without being validated.
    """
    sizes = {str(key): _bytes(value) for key, value in raw.items()}
    largest = max(sizes, key=lambda key: sizes[key], default="")
    return sum(sizes.values()), largest


def _bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    if value is None or isinstance(value, bool | int | float):
        return 8
    try:
        return len(json.dumps(value, default=str).encode())
    except (TypeError, ValueError, RecursionError):
        return MAX_SPEC_BYTES + 1  # cannot be measured, cannot be stored either


#: The ``services`` columns beyond the container spec, with their defaults (swarm mode's).
SERVICE_FIELDS = (
    "replicas",
    "update_parallelism",
    "update_delay_seconds",
    "update_monitor_seconds",
    "update_failure_action",
    "update_order",
)


class ServiceModel(RowModel):
    """One service: the container spec of :class:`RowModel` (one model for both tables) plus
    replicas and the rolling update's settings. ``node`` and ``state`` do not apply."""

    replicas: int = pydantic.Field(default=1, ge=0, le=10_000)
    update_parallelism: int = pydantic.Field(default=1, ge=0, le=10_000)
    update_delay_seconds: float = pydantic.Field(default=0.0, ge=0, allow_inf_nan=False)
    update_monitor_seconds: float = pydantic.Field(default=5.0, ge=0, allow_inf_nan=False)
    update_failure_action: domain.UpdateFailureAction = domain.UpdateFailureAction.PAUSE
    update_order: domain.UpdateOrder = domain.UpdateOrder.STOP_FIRST

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_placement(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for key in ("node", "state"):
                if value.get(key) is not None:
                    raise fail(f"{key}: does not apply to a service (its slots are placed)")
        return value

    @pydantic.field_validator("update_delay_seconds", "update_monitor_seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @pydantic.field_validator("update_failure_action", mode="before")
    @classmethod
    def _failure_action(cls, value: Any) -> domain.UpdateFailureAction:
        if value not in ("pause", "continue", "rollback"):
            raise fail(f"must be 'pause', 'continue' or 'rollback', got {show(value)}")
        return domain.UpdateFailureAction(value)

    @pydantic.field_validator("update_order", mode="before")
    @classmethod
    def _order(cls, value: Any) -> domain.UpdateOrder:
        if value not in ("stop-first", "start-first"):
            raise fail(f"must be 'stop-first' or 'start-first', got {show(value)}")
        return domain.UpdateOrder(value)
