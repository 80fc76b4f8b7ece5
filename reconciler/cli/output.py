"""How the CLI shows rows: a rich table for people, JSON or YAML for scripts.

``reconciler.cli`` turns store values into plain dicts (``desired_rows``, ``node_rows``) and
hands them to ``emit``; the same dicts are the JSON/YAML documents, so what a script reads is
exactly what the table shows, plus a few columns too wide for a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.cli import text
from reconciler.db import store as store_mod
from reconciler.spec import policy as spec_policy
from reconciler.spec import secrets

Format = Literal["table", "json", "yaml"]
FORMATS: tuple[Format, ...] = ("table", "json", "yaml")

#: (key, header) pairs shown by ``reconciler get``.
DESIRED_COLUMNS = (
    ("name", "NAME"),
    ("image", "IMAGE"),
    ("state", "STATE"),
    ("wanted_node", "NODE WANTED"),
    ("phase", "PHASE"),
    ("node", "NODE"),
    ("container", "CONTAINER"),
    ("message", "MESSAGE"),
)
#: (key, header) pairs shown by ``reconciler node ls``.
NODE_COLUMNS = (
    ("name", "NAME"),
    ("url", "URL"),
    ("health", "HEALTH"),
    ("availability", "AVAILABILITY"),
    ("containers", "CONTAINERS"),
    ("reserved_cpus", "CPUS"),
    ("reserved_memory", "MEMORY"),
    ("engine_version", "ENGINE"),
    ("last_error", "LAST ERROR"),
    ("last_seen_at", "LAST SEEN"),
)


def _plain(value: Any) -> Any:
    """A JSON/YAML-safe value: datetimes as ISO 8601 text."""
    return value.isoformat() if isinstance(value, datetime) else value


def desired_rows(
    items: Sequence[store_mod.DesiredWithStatus],
    *,
    policy: spec_policy.Policy = spec_policy.BASELINE,
    show_secrets: bool = False,
) -> list[dict[str, Any]]:
    """``reconciler get`` documents; ``container`` is the short id shown in the table.

    ``env`` holds the row's environment with secret-looking values masked
    (``spec.secrets``) unless ``show_secrets``; a row that ``policy`` refuses says so in
    ``message`` at once, as the controller will."""
    rows = []
    for d in items:
        refused = None
        if d.desired is not None and d.desired.spec is not None:
            refused = spec_policy.admit(d.desired, policy).error
        env = d.desired.spec.env if d.desired is not None and d.desired.spec is not None else {}
        rows.append(
            {
                "name": d.name,
                "image": d.image,
                "state": d.state,
                "wanted_node": d.wanted_node,
                "phase": d.phase,
                "node": d.node,
                "container_id": d.container_id,
                "container": d.container_id[:12] if d.container_id else None,
                # A row that does not validate (or that the policy refuses) says so at once,
                # before the controller has seen it.
                "message": f"invalid row: {d.error}" if d.error else (refused or d.message),
                "error": d.error or refused,
                "env": secrets.masked_env(env, show_secrets=show_secrets),
                "status_updated_at": _plain(d.status_updated_at),
            }
        )
    return rows


def node_rows(items: Sequence[store_mod.NodeListing]) -> list[dict[str, Any]]:
    """``reconciler node ls`` documents."""
    return [
        {
            "name": n.name,
            "url": n.url,
            "labels": dict(n.labels),
            "schedulable": n.schedulable,
            "health": n.health,
            "engine_version": n.engine_version,
            "api_version": n.api_version,
            "last_error": n.last_error,
            "last_seen_at": _plain(n.last_seen_at),
            "consecutive_failures": n.consecutive_failures,
            "availability": n.availability,
            # Managed containers running / total, as classic swarm's ``docker info``.
            "containers": None
            if n.managed_total is None
            else f"{n.managed_running}/{n.managed_total}",
            "reserved_cpus": n.reserved_cpus,
            "reserved_memory_bytes": n.reserved_memory_bytes,
            "reserved_memory": None
            if n.reserved_memory_bytes is None
            else f"{n.reserved_memory_bytes / 2**30:.1f} GiB",
        }
        for n in items
    ]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return text.escape_controls(str(value))  # no ESC sequence from a row reaches the terminal


def emit(
    rows: Sequence[Mapping[str, Any]],
    *,
    fmt: Format,
    columns: Sequence[tuple[str, str]],
    console: Console | None = None,
) -> None:
    """Print ``rows`` to stdout as a table (only ``columns``) or as a JSON/YAML list (all keys)."""
    if fmt == "json":
        print(json.dumps([dict(r) for r in rows], indent=2))
    elif fmt == "yaml":
        print(yaml.safe_dump([dict(r) for r in rows], sort_keys=False), end="")
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for _, header in columns:
            table.add_column(header, overflow="fold")
        for row in rows:
            # Text, not markup: a user's "[red]" in a message is shown as written.
            table.add_row(*(Text(_cell(row.get(key))) for key, _ in columns))
        (console or _console()).print(table)


def _console() -> Console:
    console = Console()
    # Piped into grep or a file, rows stay one line each instead of wrapping at 80 columns.
    return console if console.is_terminal else Console(width=1000)
