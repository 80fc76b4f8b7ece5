"""Settings: every knob of the daemon and the CLI, defined once, in one frozen value.

Each field is the single definition of one knob: its type, bounds, default and docstring. The
CLI derives everything else from it (``cli.options``): the option (``--refresh-interval``, or
the short name in :data:`FLAGS`), its help text (the docstring), its default, and the environment
variable ``RECONCILER_<FIELD>`` (``RECONCILER_REFRESH_INTERVAL``). Nothing below the CLI reads
the environment. The node layer's timing knobs (``nodes.settings.NodeSettings``) take their
defaults from here.

A pydantic dataclass, so a bad value (``--docker-timeout 0``) is refused with a message that
names the field, and ``dataclasses.replace`` re-validates.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import pydantic
from pydantic import AfterValidator, Field

LogFormat = Literal["text", "json"]

#: Options whose flag is not simply ``--`` + the field name with dashes.
FLAGS = {"reconcile_interval": "--interval", "policy_file": "--policy"}

#: Fields that are not options of ``run``/``plan`` (the root group has ``--database-url``).
NOT_DAEMON_OPTIONS = frozenset({"database_url", "log_format"})

ENV_PREFIX = "RECONCILER_"

_Positive = Annotated[float, Field(gt=0)]


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", re.IGNORECASE)


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``2m``, ``12h``, ``7d`` (ValueError otherwise)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        found = _DURATION.fullmatch(text)
        if found is None:
            raise ValueError(f"must be seconds or a number with s, m, h or d (7d), got {text!r}")
        seconds = float(found[1]) * _UNITS[found[2].lower()]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"must be a finite number of seconds >= 0, got {text!r}")
    return seconds


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``[IPv6]:PORT`` (ValueError otherwise)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must look like HOST:PORT (127.0.0.1:9465), got {text!r}")
    return host, int(port)


def _check_address(text: str) -> str:
    if text:
        parse_address(text)
    return text


@pydantic.dataclasses.dataclass(
    frozen=True, kw_only=True, config=pydantic.ConfigDict(use_attribute_docstrings=True)
)
class Settings:
    database_url: str = "sqlite:///reconciler.db"
    """SQLAlchemy URL of the store (desired rows and status); postgresql:// uses psycopg 3."""

    reconcile_interval: Annotated[float, Field(ge=0.1)] = 10.0
    """Seconds between reconcile passes when nothing wakes the loop earlier."""

    refresh_interval: Annotated[float, Field(ge=0.5)] = 30.0
    """Seconds between forced full refreshes of one node (jittered per node)."""

    failure_threshold: Annotated[int, Field(ge=1)] = 3
    """Consecutive failed engine calls after which a node is marked unhealthy."""

    backoff_cap: _Positive = 10.0
    """Upper bound, in seconds, of the exponential backoff between reconnects to an unhealthy
    node (rows have their own cap, row_backoff_cap)."""

    max_actions_per_node: Annotated[int, Field(ge=1)] = 4
    """Docker actions (create, start, stop, remove) in flight at once on one node."""

    docker_timeout: Annotated[float, Field(ge=0.1)] = 10.0
    """Seconds any single Docker API call may take before it counts as a failure."""

    events_kept: Annotated[int, Field(ge=1)] = 10_000
    """Rows the events table keeps; older ones are trimmed."""

    log_format: LogFormat = "text"
    """text for people, json (one object per line) for log collectors."""

    watch_interval: _Positive = 0.05
    """Seconds between two looks at SQLite's data_version (PostgreSQL uses LISTEN and is told
    at once)."""

    row_backoff_cap: _Positive = 60.0
    """Upper bound, in seconds, of the backoff between retries of one failing row."""

    retries_per_second: _Positive = 5.0
    """Global budget for retrying failing rows, so a storm of bad rows cannot hammer the
    engines; first attempts are never limited."""

    retry_burst: _Positive = 20.0
    """Retries that may go at once before retries_per_second applies."""

    strategy: Literal["spread", "binpack"] = "spread"
    """Where a new row goes among the nodes that fit: spread (the least loaded) or binpack
    (the most loaded that still fits)."""

    overcommit: Annotated[float, Field(ge=0, le=100)] = 0.05
    """A node's capacity for cpus/memory reservations is what its engine reports x (1 +
    overcommit)."""

    node_grace: Annotated[float, Field(ge=0)] = 30.0
    """Seconds a node stays unhealthy before its rows (reschedule='on-node-failure', not
    pinned) are placed on other nodes."""

    events_retention: Annotated[str, AfterValidator(_check_duration)] = "7d"
    """How long events are kept, however few there are: seconds, or a number with s, m, h or d
    (12h, 7d); 0 keeps them until events_kept trims them."""

    http: Annotated[str, AfterValidator(_check_address)] = "127.0.0.1:9465"
    """HOST:PORT serving /metrics (Prometheus), /healthz and /readyz; empty serves nothing."""

    identity: str = ""
    """This controller's name in the leases table (must differ between controllers); empty:
    <hostname>:<pid>."""

    lease_duration: _Positive = 15.0
    """Seconds a leader's lease lasts without a renewal; a standby takes an expired lease."""

    renew_deadline: _Positive = 10.0
    """Seconds a leader keeps acting without a successful renewal; then it stops at once
    (before its next Docker call). Less than lease_duration."""

    retry_period: _Positive = 2.0
    """Seconds between two attempts to renew (leader) or acquire (standby) the lease.
    lease_duration > renew_deadline > 1.2 x retry_period."""

    @pydantic.model_validator(mode="after")
    def _lease_timings_agree(self) -> Settings:
        # client-go's leaderelection rules: a leader gives up (renew deadline) before anyone
        # may take its lease (duration), and gets more than one try to renew before it gives up.
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"--lease-duration ({self.lease_duration:g}) must be greater than "
                f"--renew-deadline ({self.renew_deadline:g})"
            )
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(
                f"--renew-deadline ({self.renew_deadline:g}) must be greater than 1.2 x "
                f"--retry-period ({self.retry_period:g})"
            )
        return self

    policy_file: str = ""
    """YAML admission policy (allowed_host_paths, allow_host_network, allowed_images, max_cpus,
    max_memory_bytes); empty: the built-in baseline (no host-sensitive bind mounts, no host
    network)."""

    docker_config: str = ""
    """Docker config.json with registry credentials (the file docker login writes); empty:
    $DOCKER_CONFIG/config.json, else ~/.docker/config.json. Never logged nor stored."""

    pull_timeout: Annotated[float, Field(gt=0)] = 300.0
    """Seconds one image pull may take before it fails the row (pulls are slow; other calls
    keep docker_timeout)."""


def describe(name: str) -> str:
    """The docstring of field ``name``, on one line (the CLI's help text)."""
    info = Settings.__pydantic_fields__[name]  # type: ignore[attr-defined]
    return " ".join((info.description or "").split())


def field_names() -> list[str]:
    return list(Settings.__pydantic_fields__)  # type: ignore[attr-defined]


def flag(name: str) -> str:
    """The command-line flag of field ``name``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def env_var(name: str) -> str:
    """The environment variable of field ``name``: ``RECONCILER_<NAME>``."""
    return ENV_PREFIX + name.upper()


DEFAULTS = Settings()
"""The defaults, for layers that take their own defaults from here (``NodeSettings``)."""
