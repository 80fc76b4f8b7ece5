"""Validate raw desired rows into ``DesiredContainer`` values; hash specs; label containers.

This is the gate between what people write and what the planner reads. A raw row is a dict from
SQL (``db.desired.load``: JSON columns arrive as *text*, possibly malformed) or from a YAML file
(``reconciler apply``: JSON fields are already lists and dicts). One pydantic model,
``spec_model.RowModel``, validates both:

* :func:`parse_row` never raises: a bad row becomes ``DesiredContainer(spec=None, error=...)``
  whose error names the field, e.g. ``state: must be 'running' or 'stopped', got 'paused'``. One
  bad row must not stop the pass for the others.
* :func:`validate_row_strict` raises :class:`SpecError` with the same words, for the CLI.

Strict, with a few friendly coercions that people expect from ``docker run`` and compose:
numbers in ``env``/``labels`` values become strings (booleans do not: quote them), ``ports`` and
``mounts`` accept Docker's short strings (``"127.0.0.1:8080:80/tcp"``, ``"data:/var/lib:ro"``),
``memory_bytes`` accepts ``"512m"``-style sizes and ``cpus`` a numeric string, and ``null`` for
``env``/``labels``/``ports``/``mounts`` means empty. Everything else must have the right type.

:func:`spec_hash` is the drift detector (a SHA-256 of the canonical JSON of what shapes the
container, as compose's ``config-hash``); :func:`container_labels` are the labels that make a
container ours.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from reconciler import domain
from reconciler.spec import model as spec_model


class SpecError(ValueError):
    """A desired item is invalid; ``problems`` holds one ``"<field>: <what is wrong>"`` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# -- turning validation errors into sentences ------------------------------------------------

_TYPE_WORDS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    model: type[pydantic.BaseModel] = spec_model.RowModel
    if loc[:1] in (("ports",), ("mounts",)):
        model = spec_model.PortModel if loc[0] == "ports" else spec_model.MountModel
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}; known: {', '.join(model.model_fields)}"


def _describe(error: pydantic_core.ErrorDetails) -> str:
    """One pydantic error as ``"<field>: <what is wrong>"``."""
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "reconciler":
        what = error["msg"]
    elif kind == "missing":
        what = "is required"
    elif kind == "extra_forbidden":
        what = _unknown_field(loc)
    elif kind in _TYPE_WORDS:
        what = f"{_TYPE_WORDS[kind]}, got {spec_model.show(error['input'])}"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        what = f"must be {_BOUNDS[kind]} {bound}, got {spec_model.show(error['input'])}"
    elif kind == "literal_error":
        what = f"must be {ctx['expected']}, got {spec_model.show(error['input'])}"
    else:
        what = error["msg"]
    where = _location(loc)
    return f"{where}: {what}" if where else what


# -- rows to values ----------------------------------------------------------------------------


def _validate(raw: object, *, json_text: bool) -> spec_model.RowModel:
    if not isinstance(raw, Mapping):
        raise SpecError([f"must be a mapping of field names to values, got {spec_model.show(raw)}"])
    size, largest = spec_model.spec_size(raw)
    if size > spec_model.MAX_SPEC_BYTES:
        raise SpecError(
            [
                f"{largest}: too large (the row's spec is {_mib(size)}; "
                f"a row may hold at most {_mib(spec_model.MAX_SPEC_BYTES)})"
            ]
        )
    try:
        return spec_model.RowModel.model_validate(dict(raw), context={"json_text": json_text})
    except pydantic.ValidationError as e:
        raise SpecError([_describe(error) for error in e.errors()]) from None


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size < 10 * 1024 * 1024 else f"{size >> 20} MiB"


def _port_key(port: domain.PortBinding) -> tuple[int, str, str, int]:
    return (port.container_port, port.protocol, port.host_ip or "", port.host_port or 0)


def _desired(row: spec_model.RowModel) -> domain.DesiredContainer:
    spec = domain.ContainerSpec(
        name=row.name,
        image=row.image,
        command=None if row.command is None else tuple(row.command),
        entrypoint=None if row.entrypoint is None else tuple(row.entrypoint),
        env=domain.Env(row.env),
        labels=dict(row.labels),
        # Order carries no meaning to Docker; a canonical order keeps equality and hash stable.
        ports=tuple(
            sorted((domain.PortBinding(**p.model_dump()) for p in row.ports), key=_port_key)
        ),
        mounts=tuple(sorted((domain.Mount(**m.model_dump()) for m in row.mounts), key=_mount_key)),
        network=row.network,
        cpus=row.cpus,
        memory_bytes=row.memory_bytes,
        user=row.user,
        workdir=row.workdir,
        stop_timeout=row.stop_timeout,
        pull=row.pull,
        restart=row.restart,
        healthcheck=_healthcheck(row.healthcheck),
    )
    return domain.DesiredContainer(
        name=row.name,
        state=row.state,
        node=None if row.node is None else domain.NodeName(row.node),
        spec=spec,
        spec_hash=spec_hash(spec),
        constraints=tuple(spec_model.parse_constraint(c) for c in row.constraints),
        reschedule=row.reschedule,
    )


def _mount_key(mount: domain.Mount) -> str:
    return mount.target


def _broken(raw: object, error: str) -> domain.DesiredContainer:
    """The value for a row that failed validation: what can be salvaged, plus the error."""
    fields = raw if isinstance(raw, Mapping) else {}
    name, state, node = fields.get("name"), fields.get("state"), fields.get("node")
    return domain.DesiredContainer(
        name=name if isinstance(name, str) else str(name or ""),
        # The planner does not act on a broken row; the column default is as good as any.
        state=domain.DesiredState(state)
        if state in ("running", "stopped")
        else domain.DesiredState.RUNNING,
        node=domain.NodeName(node)
        if isinstance(node, str) and spec_model.NODE_NAME_RE.fullmatch(node)
        else None,
        spec=None,
        spec_hash=None,
        error=error,
    )


def parse_row(raw: Mapping[str, Any], *, json_text: bool = True) -> domain.DesiredContainer:
    """Validate one row; never raises.

    ``json_text=True`` (rows from SQL) parses string values of the JSON columns as JSON text. On
    any problem the result has ``spec=None`` and ``error`` lists every problem found, each as
    ``"<field>: <what is wrong>"`` joined by ``"; "``.
    """
    try:
        return _desired(_validate(raw, json_text=json_text))
    except SpecError as e:
        return _broken(raw, str(e))


def validate_row_strict(raw: object, *, json_text: bool = False) -> domain.DesiredContainer:
    """Validate one item (from YAML by default); raise :class:`SpecError` if it is invalid."""
    return _desired(_validate(raw, json_text=json_text))


# -- hash and labels ---------------------------------------------------------------------------


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if item is not None}


def spec_hash(spec: domain.ContainerSpec) -> str:
    """SHA-256 hex of the canonical JSON of everything that shapes the container.

    Left out: ``name`` (identity, not shape), ``stop_timeout`` and ``pull`` (changing them must
    not recreate the container). Fields whose value is None are omitted, so adding an optional
    field later does not change the hash of existing specs. Key order and port/mount order do
    not matter.
    """
    payload = _without_none(
        {
            "image": spec.image,
            "command": None if spec.command is None else list(spec.command),
            "entrypoint": None if spec.entrypoint is None else list(spec.entrypoint),
            "env": dict(spec.env),
            "labels": dict(spec.labels),
            "ports": [
                _without_none(dataclasses.asdict(p)) for p in sorted(spec.ports, key=_port_key)
            ],
            "mounts": [dataclasses.asdict(m) for m in sorted(spec.mounts, key=_mount_key)],
            "network": spec.network,
            "cpus": None if spec.cpus is None else float(spec.cpus),
            "memory_bytes": spec.memory_bytes,
            "user": spec.user,
            "workdir": spec.workdir,
            "healthcheck": None
            if spec.healthcheck is None
            else _without_none(dataclasses.asdict(spec.healthcheck)),
        }
    )
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def container_labels(
    spec: domain.ContainerSpec,
    spec_hash: str,
    *,
    node: str | None = None,
    installation: str | None = None,
) -> dict[str, str]:
    """The labels for the container: the user's, plus the ones that mark it as ours (and, with
    ``installation``, as this reconciler database's)."""
    labels = dict(spec.labels)
    labels[domain.MANAGED_LABEL] = "true"
    labels[domain.NAME_LABEL] = spec.name
    labels[domain.SPEC_HASH_LABEL] = spec_hash
    if node is not None:
        labels[domain.NODE_LABEL] = node
    if spec.service is not None:
        labels[domain.SERVICE_LABEL] = spec.service
    if spec.slot is not None:
        labels[domain.SLOT_LABEL] = str(spec.slot)
    if installation is not None:
        labels[domain.INSTALLATION_LABEL] = installation
    return labels


def _healthcheck(model: spec_model.HealthcheckModel | None) -> domain.Healthcheck | None:
    if model is None:
        return None
    return domain.Healthcheck(
        test=tuple(model.test),
        interval_seconds=model.interval_seconds,
        timeout_seconds=model.timeout_seconds,
        retries=model.retries,
        start_period_seconds=model.start_period_seconds,
    )


# -- services ----------------------------------------------------------------------------------


def _validate_service(raw: object, *, json_text: bool) -> spec_model.ServiceModel:
    if not isinstance(raw, Mapping):
        raise SpecError([f"must be a mapping of field names to values, got {spec_model.show(raw)}"])
    size, largest = spec_model.spec_size(raw)
    if size > spec_model.MAX_SPEC_BYTES:
        raise SpecError([f"{largest}: too large (the service's spec is {_mib(size)})"])
    try:
        return spec_model.ServiceModel.model_validate(dict(raw), context={"json_text": json_text})
    except pydantic.ValidationError as e:
        raise SpecError([_describe(error) for error in e.errors()]) from None


def _service(model: spec_model.ServiceModel) -> domain.ServiceDef:
    row = _desired(model)
    return domain.ServiceDef(
        name=model.name,
        spec=row.spec,
        spec_hash=row.spec_hash,
        replicas=model.replicas,
        update=domain.UpdateConfig(
            parallelism=model.update_parallelism,
            delay_seconds=model.update_delay_seconds,
            monitor_seconds=model.update_monitor_seconds,
            failure_action=model.update_failure_action,
            order=model.update_order,
        ),
        source=model.model_dump(mode="json", exclude={"node", "state"}),
    )


def parse_service(raw: Mapping[str, Any], *, json_text: bool = True) -> domain.ServiceDef:
    """Validate one ``services`` row (or a kept ``service_status.spec``); never raises: a bad
    row becomes a ``ServiceDef`` with ``spec=None`` and ``error`` (as :func:`parse_row`)."""
    try:
        return _service(_validate_service(raw, json_text=json_text))
    except SpecError as e:
        name = raw.get("name") if isinstance(raw, Mapping) else None
        return domain.ServiceDef(
            name=name if isinstance(name, str) else str(name or ""),
            spec=None,
            spec_hash=None,
            error=str(e),
        )


def validate_service_strict(raw: object, *, json_text: bool = False) -> domain.ServiceDef:
    """Validate one service item (from YAML by default); raise :class:`SpecError`."""
    return _service(_validate_service(raw, json_text=json_text))


__all__ = [
    "SpecError",
    "container_labels",
    "parse_row",
    "parse_service",
    "spec_hash",
    "validate_row_strict",
    "validate_service_strict",
]
