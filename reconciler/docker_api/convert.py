"""SDK dicts → project values, and container specs → SDK create arguments.

Pure functions (no requests): ``client`` calls them on what the engine returned. Only the keys
read here are relied on, so an engine newer than API 1.41 that adds keys changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker.types

from reconciler import domain

_PARENS = re.compile(r"\([^)]*\)")


@dataclass(frozen=True)
class ContainerSummary:
    """One entry of the container list (no inspect): enough to tell what changed."""

    id: domain.ContainerId
    name: str
    image: str
    image_id: str | None
    state: str
    status: str
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None

    @property
    def change_key(self) -> tuple[str, str]:
        """What must differ for a cached container to be inspected again.

        ``Status`` is display text whose durations change every minute ("Up 5 minutes"); only
        its parenthesised parts are facts (exit code, health, paused), so only they count.
        """
        return (self.state, " ".join(_PARENS.findall(self.status)))


@dataclass(frozen=True)
class EngineEvent:
    """One decoded entry of the engine's event stream."""

    type: str
    action: str
    id: str
    time_nano: int
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def time(self) -> float:
        """Engine clock, epoch seconds."""
        return self.time_nano / 1e9


def epoch(text: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``) as epoch seconds; its zero time as None."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def summary(raw: Mapping[str, Any]) -> ContainerSummary:
    """One entry of ``GET /containers/json``."""
    names = raw.get("Names") or []
    return ContainerSummary(
        id=domain.ContainerId(raw["Id"]),
        name=str(names[0]).lstrip("/") if names else "",
        image=str(raw.get("Image") or ""),
        image_id=raw.get("ImageID"),
        state=str(raw.get("State") or ""),
        status=str(raw.get("Status") or ""),
        labels=dict(raw.get("Labels") or {}),
        created=float(raw["Created"]) if raw.get("Created") else None,
    )


def status_text(state: Mapping[str, Any]) -> str:
    """A status that changes only when the container's state does (unlike "Up 5 minutes")."""
    word = str(state.get("Status") or "")
    if word in ("running", "paused", "restarting"):
        text = f"{word} since {str(state.get('StartedAt') or '')[:19]}Z"
    elif word in ("exited", "dead"):
        text = f"{word} with code {state.get('ExitCode')} at {str(state.get('FinishedAt'))[:19]}Z"
    else:
        text = word
    if health := (state.get("Health") or {}).get("Status"):
        text += f", {health}"
    if state.get("OOMKilled"):
        text += ", killed for lack of memory"
    if state.get("Error"):
        text += f": {state['Error']}"
    return text


def observed(raw: Mapping[str, Any], *, node: domain.NodeName) -> domain.ObservedContainer:
    """The answer of ``GET /containers/{id}/json``."""
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    return domain.ObservedContainer(
        node=node,
        id=domain.ContainerId(raw["Id"]),
        name=str(raw.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or ""),
        state=str(state.get("Status") or ""),
        labels=dict(config.get("Labels") or {}),
        image_id=raw.get("Image"),
        status=status_text(state),
        exit_code=state.get("ExitCode"),
        created=epoch(raw.get("Created")),
        health=(state.get("Health") or {}).get("Status") or None,
        ports=host_ports(raw),
    )


def host_ports(raw: Mapping[str, Any]) -> tuple[domain.PortBinding, ...]:
    """The host ports a container holds while it runs: its requested bindings
    (``HostConfig.PortBindings``; the engine's own view, ``NetworkSettings.Ports``, is empty
    without a bridge network)."""
    bindings = (raw.get("HostConfig") or {}).get("PortBindings") or {}
    found = []
    for key, hosts in bindings.items():
        port, _, protocol = str(key).partition("/")
        for host in hosts or []:
            text = str((host or {}).get("HostPort") or "")
            if text.isdigit() and port.isdigit():
                ip = (host or {}).get("HostIp") or None
                found.append(domain.PortBinding(int(port), protocol or "tcp", int(text), ip))
    return tuple(found)


def image(raw: Mapping[str, Any], *, node: domain.NodeName) -> domain.ObservedImage:
    """One entry of ``GET /images/json``; tags sorted, ``<none>:<none>`` dropped."""
    tags = [t for t in raw.get("RepoTags") or [] if t != "<none>:<none>"]
    return domain.ObservedImage(
        node=node, id=str(raw["Id"]), tags=tuple(sorted(tags)), size_bytes=raw.get("Size")
    )


def event(raw: object) -> EngineEvent | None:
    """One decoded event; None for anything that is not an object."""
    if not isinstance(raw, Mapping):
        return None
    actor = raw.get("Actor") or {}
    time_nano = raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000
    return EngineEvent(
        type=str(raw.get("Type") or ""),
        action=str(raw.get("Action") or raw.get("status") or ""),
        id=str(actor.get("ID") or raw.get("id") or ""),
        time_nano=int(time_nano),
        attributes=dict(actor.get("Attributes") or {}),
    )


def create_args(api: Any, spec: domain.ContainerSpec, labels: Mapping[str, str]) -> dict[str, Any]:
    """``APIClient.create_container`` keyword arguments; unset fields are left to Docker.

    ``labels`` are added to ``spec.labels`` and win on a clash (the ownership labels).
    """
    bindings: dict[int | str, Any] = {
        f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) if p.host_ip else p.host_port
        for p in spec.ports
    }
    mounts = [
        docker.types.Mount(
            target=m.target,
            source=m.source,
            type=m.type,  # type: ignore[arg-type]  # validated by spec.py
            read_only=m.read_only,
        )
        for m in spec.mounts
    ]
    host_config = api.create_host_config(
        port_bindings=bindings or None,
        mounts=mounts or None,
        # None leaves the network mode unset: dockerd then skips a prestart hook (2x faster).
        network_mode=spec.network,
        nano_cpus=round(spec.cpus * 1e9) if spec.cpus else None,
        mem_limit=spec.memory_bytes,
    )
    return {
        "image": spec.image,
        "name": spec.container_name or spec.name,
        "command": list(spec.command) if spec.command is not None else None,
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "environment": dict(spec.env) or None,
        "labels": {**spec.labels, **labels},
        "ports": [(p.container_port, p.protocol) for p in spec.ports] or None,
        "user": spec.user,
        "working_dir": spec.workdir,
        "stop_timeout": spec.stop_timeout,
        "healthcheck": _healthcheck(spec.healthcheck),
        "host_config": host_config,
    }


def _healthcheck(check: domain.Healthcheck | None) -> dict[str, Any] | None:
    """Docker's ``Healthcheck`` object (durations in nanoseconds); None keeps the image's."""
    if check is None:
        return None

    def ns(seconds: float | None) -> int | None:
        return None if seconds is None else round(seconds * 1e9)

    found = {
        "test": list(check.test),
        "interval": ns(check.interval_seconds),
        "timeout": ns(check.timeout_seconds),
        "retries": check.retries,
        "start_period": ns(check.start_period_seconds),
    }
    return {key: value for key, value in found.items() if value is not None}
