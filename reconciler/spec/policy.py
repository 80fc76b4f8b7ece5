"""The admission policy: what a desired row may ask of a node (Pod Security "baseline").

Whoever may INSERT a desired row would otherwise be root on every node: a bind mount of ``/`` or
of the Docker socket, or ``network: host``, hands the host over. So, by default (:data:`BASELINE`),
a row may not:

* bind-mount ``/``, ``/etc``, ``/proc``, ``/sys``, ``/dev``, ``/boot``, ``/root``,
  ``/var/lib/docker``, the Docker socket (``/var/run/docker.sock``, ``/run/docker.sock``), any
  path inside them (``/etc/shadow``), or any parent of them (``/var`` exposes the socket);
* use ``network: host`` or join another container's namespaces (``network: container:…``).

A policy file (``reconciler run --policy FILE``, YAML) widens or narrows that::

    allowed_host_paths: [/var/log]     # may be bind-mounted even where the default forbids it
    allow_host_network: false          # true allows network: host and container:...
    allowed_images: [registry.example.com/team]   # absent: any image
    max_cpus: 2                        # per row; a row must then set cpus
    max_memory_bytes: 1073741824       # per row; a row must then set memory_bytes

:func:`violations` lists what a spec breaks, each as ``"host path /var/run/docker.sock is not
allowed"``; :func:`admit` turns a row that breaks the policy into a failed row whose error starts
with ``policy:``. Pure: :func:`parse` takes the file's text, the caller reads it.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from reconciler import domain
from reconciler.spec import model as spec_model

__all__ = [
    "BASELINE",
    "FORBIDDEN_HOST_PATHS",
    "Policy",
    "PolicyError",
    "admit",
    "parse",
    "violations",
]

#: Host paths a row may not bind-mount by default (nor anything inside them, nor their parents).
FORBIDDEN_HOST_PATHS = (
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/var/lib/docker",
    "/var/run/docker.sock",
    "/run/docker.sock",
)
_KEYS = ("allowed_host_paths", "allow_host_network", "allowed_images", "max_cpus",
         "max_memory_bytes")  # fmt: skip


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the key at fault."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """What rows may ask for; the defaults are the baseline."""

    #: Host path prefixes that may be bind-mounted even where the baseline forbids them.
    allowed_host_paths: tuple[str, ...] = ()
    #: Allow ``network: host`` and ``network: container:…``.
    allow_host_network: bool = False
    #: Registry/repository prefixes an image must start with; None: any image.
    allowed_images: tuple[str, ...] | None = None
    #: The most CPUs a row may ask for; rows must then set ``cpus``.
    max_cpus: float | None = None
    #: The most memory a row may ask for; rows must then set ``memory_bytes``.
    max_memory_bytes: int | None = None


BASELINE = Policy()


def _inside(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it (both normalised, absolute)."""
    return path == prefix or prefix == "/" or path.startswith(prefix + "/")


def _normal(path: str) -> str:
    # Lexical only (the host's symlinks are not ours to read): "/var/run/../lib" → "/var/lib".
    return posixpath.normpath("/" + path.lstrip("/"))


def _host_path_forbidden(path: str, policy: Policy) -> bool:
    source = _normal(path)
    if any(_inside(source, _normal(allowed)) for allowed in policy.allowed_host_paths):
        return False
    for forbidden in FORBIDDEN_HOST_PATHS:
        if _inside(forbidden, source):  # a parent of (or) a forbidden path: /var, /run, /
            return True
        if forbidden != "/" and _inside(source, forbidden):  # inside one: /etc/shadow
            return True
    return False


def image_name(ref: str) -> str:
    """``ref`` without tag or digest, with Docker's implied registry and library:
    ``busybox:1`` → ``docker.io/library/busybox``, ``127.0.0.1:5000/demo/x:1`` unchanged
    but for the tag."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    first, slash, _rest = name.partition("/")
    if not slash:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _image_allowed(ref: str, prefixes: Iterable[str]) -> bool:
    name = image_name(ref)
    for prefix in prefixes:
        wanted = prefix.rstrip("/")
        # A prefix names a registry or a repository path: whole path components only.
        for candidate in {wanted, image_name(wanted)}:
            if name == candidate or name.startswith(candidate + "/"):
                return True
    return False


def violations(spec: domain.ContainerSpec, policy: Policy = BASELINE) -> list[str]:
    """What ``spec`` asks for that ``policy`` does not allow, in words (empty: admitted)."""
    found: list[str] = []
    for mount in spec.mounts:
        if mount.type == "bind" and _host_path_forbidden(mount.source, policy):
            found.append(f"host path {_normal(mount.source)} is not allowed")
    network = spec.network or ""
    if not policy.allow_host_network:
        if network == "host":
            found.append("network host is not allowed")
        elif network.startswith("container:"):
            found.append(f"network {network} (another container's namespaces) is not allowed")
    if policy.allowed_images is not None and not _image_allowed(spec.image, policy.allowed_images):
        found.append(
            f"image {spec.image} is not allowed (allowed: "
            f"{', '.join(policy.allowed_images) or 'none'})"
        )
    if policy.max_cpus is not None:
        if spec.cpus is None:
            found.append(f"cpus must be set (at most {policy.max_cpus:g})")
        elif spec.cpus > policy.max_cpus:
            found.append(f"cpus {spec.cpus:g} is more than the allowed {policy.max_cpus:g}")
    if policy.max_memory_bytes is not None:
        if spec.memory_bytes is None:
            found.append(f"memory_bytes must be set (at most {policy.max_memory_bytes})")
        elif spec.memory_bytes > policy.max_memory_bytes:
            found.append(
                f"memory_bytes {spec.memory_bytes} is more than the allowed "
                f"{policy.max_memory_bytes}"
            )
    return found


def admit(row: domain.DesiredContainer, policy: Policy = BASELINE) -> domain.DesiredContainer:
    """``row`` as is when ``policy`` admits it; else the row failed with
    ``"policy: <violation>; <violation>"`` (``spec`` None, so nothing is created for it)."""
    if row.spec is None:
        return row
    found = violations(row.spec, policy)
    if not found:
        return row
    error = "; ".join(f"policy: {what}" for what in found)
    return dataclasses.replace(row, spec=None, spec_hash=None, error=error)


def parse(text: str, *, source: str = "policy") -> Policy:
    """A :class:`Policy` from the YAML text of a policy file; :class:`PolicyError` if it is not
    one. An empty file is the baseline."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"{source}: invalid YAML: {e}") from None
    if data is None:
        return BASELINE
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: must be a mapping of {', '.join(_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise PolicyError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(_KEYS)}")
    return Policy(
        allowed_host_paths=_paths(data.get("allowed_host_paths"), source),
        allow_host_network=_bool(data.get("allow_host_network", False), source),
        allowed_images=_images(data.get("allowed_images"), source),
        max_cpus=_number(data.get("max_cpus"), "max_cpus", source),
        max_memory_bytes=_bytes(data.get("max_memory_bytes"), source),
    )


def _strings(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{source}: {key}: must be a list of non-empty strings")
    return tuple(value)


def _paths(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    paths = _strings(value, "allowed_host_paths", source)
    for path in paths:
        if not path.startswith("/"):
            raise PolicyError(f"{source}: allowed_host_paths: {path!r} is not an absolute path")
    return paths


def _images(value: Any, source: str) -> tuple[str, ...] | None:
    return None if value is None else _strings(value, "allowed_images", source)


def _bool(value: Any, source: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{source}: allow_host_network: must be true or false")
    return value


def _number(value: Any, key: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PolicyError(f"{source}: {key}: must be a positive number")
    return float(value)


def _bytes(value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return spec_model.parse_size(value)
        except ValueError:  # pydantic_core.PydanticCustomError is a ValueError
            raise PolicyError(
                f"{source}: max_memory_bytes: must be a number of bytes or a size such as '1g'"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PolicyError(f"{source}: max_memory_bytes: must be a positive number of bytes")
    return value
