"""``reconciler describe``, ``events`` and ``logs``: "why is this row not running?" without SQL.

kubectl and docker are the models: ``describe`` prints one object as labelled lines, its spec
and its latest events; ``events`` lists the events log (``--for``, ``--since``, ``--follow``);
``logs`` reads a row's container output through its node's engine. Reads go through the store's
named methods; ``logs`` alone talks to an engine (``docker_api``). Env values of secret-looking
keys are masked unless ``--show-secrets``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
import yaml

from reconciler import docker_api, errors
from reconciler import settings as settings_mod
from reconciler.cli import text
from reconciler.cli.main import _settings, _store, main
from reconciler.db import store as store_mod

#: Seconds between two reads of the events table with ``--follow``.
FOLLOW_INTERVAL = 1.0

#: Env keys holding any of these words (case-insensitive) are shown masked.
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")
MASK = "***"


def masked_env(env: dict[str, Any], *, show_secrets: bool) -> dict[str, Any]:
    """``env`` with the values of secret-looking keys replaced by ``***``."""
    if show_secrets:
        return dict(env)
    return {
        k: MASK if any(w in str(k).upper() for w in SECRET_WORDS) else v for k, v in env.items()
    }


def since_seconds(value: str | None, param: str = "--since") -> float | None:
    """``10m`` → 600.0; a usage error names ``param`` when ``value`` is not a duration."""
    if value is None:
        return None
    try:
        return settings_mod.parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=param) from None


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _event_lines(items: Sequence[store_mod.StoredEvent], *, with_object: bool) -> list[str]:
    lines = []
    for e in items:
        where = f"{e.object:<24} " if with_object else ""
        lines.append(f"{_when(e.time)}  {e.type:<7} {e.reason:<18} {where}{e.message}")
    return lines


# -- describe ----------------------------------------------------------------------------------


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[node] NAME")
@click.option("--show-secrets", is_flag=True, help="Show the values of secret-looking env keys.")
@click.option(
    "--events", "last", type=click.IntRange(min=0), default=10, show_default=True,
    help="How many of the latest events to show.",
)  # fmt: skip
@click.pass_context
def describe(ctx: click.Context, args: tuple[str, ...], show_secrets: bool, last: int) -> None:
    """Show everything known about desired container NAME (or node NAME), and why it is not
    running if it is not."""
    if len(args) == 2 and args[0] == "node":
        _describe_node(ctx, args[1], last=last)
    elif len(args) == 1:
        _describe_row(ctx, args[0], show_secrets=show_secrets, last=last)
    else:
        raise click.UsageError("give NAME, or `node NAME`")


def _field(label: str, value: object) -> str:
    return f"{label + ':':<15}{'-' if value is None or value == '' else value}"


def _describe_row(ctx: click.Context, name: str, *, show_secrets: bool, last: int) -> None:
    store = _store(ctx)
    found = store.describe_row(name)
    if found is None:
        raise click.ClickException(f"no desired container named {name!r}")
    status = found.status or {}
    spec = {k: v for k, v in found.spec.items() if v not in (None, {}, [], "")}
    if isinstance(spec.get("env"), dict):
        spec["env"] = masked_env(spec["env"], show_secrets=show_secrets)
    node = found.node
    container = found.container or {}
    restarts = status.get("restarts")
    lines = [
        _field("Name", name),
        _field("Image", spec.get("image")),
        _field("State", f"{spec.get('state', 'running')} (desired)"),
        _field("Phase", status.get("phase") or "(no status yet)"),
        _field("Node", f"{node.name} ({node.health})" if node else status.get("node")),
        _field("Container", (status.get("container_id") or "")[:12]),
    ]
    if container:
        code, state = container.get("exit_code"), container["state"]
        exited = f", exit code {code}" if code is not None and state != "running" else ""
        lines.append(_field("Engine state", f"{container['state']}{exited}"))
    lines += [
        _field("Restarts", restarts if restarts is not None else found.restarts),
        _field("Failures", status.get("failures", 0)),
        _field("Message", status.get("message")),
    ]
    if status.get("next_attempt_at"):
        lines.append(_field("Next attempt", _when(status["next_attempt_at"]) + " UTC"))
    why = _why_not_running(found)
    if why:
        lines.append(_field("Not running", why))
    for line in lines:
        _say(line)
    click.echo("Spec:")
    click.echo(_indent(yaml.safe_dump(spec, sort_keys=False, default_flow_style=False)))
    _echo_events(store.list_events(objects=[f"container/{name}"], last=last), with_object=False)


def _why_not_running(found: store_mod.RowDetails) -> str | None:
    """One sentence, or None when the row runs as asked."""
    status = found.status
    state = found.spec.get("state") or "running"
    node = found.node
    if found.error:
        return f"the row is invalid: {found.error}"
    if status is None:
        return "the controller has not recorded this row yet: is `reconciler run` running?"
    phase = status.get("phase")
    if phase == "running":
        container = found.container
        if container and container.get("state") != "running":
            return f"its container is {container['state']} on the engine; the next pass acts"
        return None
    if state != "running" and phase in ("stopped", "completed"):
        return None  # stopped as asked
    reasons = [str(status.get("message") or f"phase {phase}")]
    if node is not None and node.health != "healthy":
        reasons.append(
            f"node {node.name} is {node.health}"
            + (f" ({node.last_error})" if node.last_error else "")
        )
    if node is not None and not node.schedulable:
        reasons.append(f"node {node.name} is cordoned")
    return "; ".join(reasons)


def _describe_node(ctx: click.Context, name: str, *, last: int) -> None:
    store = _store(ctx)
    found = store.describe_node(name)
    if found is None:
        raise click.ClickException(f"no node named {name!r}")
    n, facts = found.listing, found.facts
    memory = facts.get("memory_bytes")
    managed, total = found.containers
    lines = [
        _field("Name", n.name),
        _field("URL", n.url),
        _field("Health", n.health),
        _field("Schedulable", "yes" if n.schedulable else "no (cordoned)"),
        _field("Labels", ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items()))),
        _field("Last error", n.last_error),
        _field("Failures", n.consecutive_failures),
        _field("Last seen", _when(n.last_seen_at) + " UTC" if n.last_seen_at else None),
        _field("Engine", f"{facts.get('engine_version') or '-'} (API {n.api_version or '-'})"),
        _field("Engine ID", facts.get("engine_id")),
        _field("OS", facts.get("os")),
        _field("CPUs", facts.get("cpus")),
        _field("Memory", f"{memory / 2**30:.1f} GiB" if memory else None),
        _field("TLS", "yes" if facts.get("tls_ca_cert") or facts.get("tls_client_cert") else "no"),
        _field("Containers", f"{managed} managed, {total} in all"),
    ]
    for line in lines:
        _say(line)
    click.echo("Rows:")
    for row_name, phase, container_id, message in found.rows:
        short = (container_id or "-")[:12]
        _say(f"  {row_name:<24} {phase:<13} {short:<12} {message or ''}".rstrip())
    if not found.rows:
        click.echo("  (none)")
    _echo_events(store.list_events(objects=[f"node/{name}"], last=last), with_object=False)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip("\n").splitlines())


def _echo_events(items: Sequence[store_mod.StoredEvent], *, with_object: bool) -> None:
    click.echo("Events:")
    if not items:
        click.echo("  (none kept)")
    for line in _event_lines(items, with_object=with_object):
        _say("  " + line)


# -- events ------------------------------------------------------------------------------------


def _objects(name: str | None) -> list[str] | None:
    """``--for web-1`` means ``container/web-1``; ``node/n1`` and ``container/x`` as given."""
    if name is None:
        return None
    return [name] if "/" in name else [f"container/{name}"]


@main.command()
@click.option("--for", "for_", metavar="NAME", help="A row's events (or node/NAME's).")
@click.option("--since", metavar="DURATION", help="Only events this recent: 90s, 10m, 2h, 7d.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.pass_context
def events(ctx: click.Context, for_: str | None, since: str | None, follow: bool) -> None:
    """List the events reconciler recorded, oldest first."""
    seconds = since_seconds(since)
    store = _store(ctx)
    objects = _objects(for_)
    found = store.list_events(objects=objects, since=seconds)
    if not found and not follow:
        scope = (f" for {for_}" if for_ else "") + (f" in {since}" if since else "")
        click.echo(f"no events{scope}")
    for line in _event_lines(found, with_object=True):
        _say(line)
    if not follow:
        return
    last_id = found[-1].id if found else _newest_id(store)
    _stop_on_signals()
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            try:
                more = store.list_events(objects=objects, after_id=last_id)
            except store_mod.DatabaseError:
                continue  # the store said so once; keep following
            for line in _event_lines(more, with_object=True):
                _say(line)
            if more:
                last_id = more[-1].id
    except KeyboardInterrupt:
        return


def _say(line: str) -> None:
    """Print one line; control characters from rows are escaped (no forged lines, no terminal
    escape sequences)."""
    click.echo(text.escape_controls(line))


def _stop_on_signals() -> None:
    """Let Ctrl-C (and SIGTERM) end a ``--follow``, even in a process that started with SIGINT
    ignored (a background job of a non-interactive shell inherits that, and Python keeps it)."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)


def _newest_id(store: store_mod.Store) -> int:
    newest = store.list_events(last=1)
    return newest[-1].id if newest else 0


# -- logs --------------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until Ctrl-C.")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.pass_context
def logs(ctx: click.Context, name: str, follow: bool, tail: int | None) -> None:
    """Print the output of desired container NAME, read from its node's engine."""
    store = _store(ctx)
    found = store.describe_row(name)
    if found is None:
        raise click.ClickException(f"no desired container named {name!r}")
    status = found.status or {}
    container_id, node_name = status.get("container_id"), status.get("node")
    if not container_id or not node_name:
        why = _why_not_running(found) or f"phase {status.get('phase')}"
        raise click.ClickException(f"{name} has no container yet: {why}")
    row = next((n for n in store.list_nodes() if n.name == node_name), None)
    if row is None:
        raise click.ClickException(f"{name} is on node {node_name}, which is no longer registered")
    timeout = _settings(ctx).docker_timeout
    try:
        client = docker_api.connect(row, timeout=timeout)
    except errors.EngineError as e:
        raise click.ClickException(f"cannot reach node {node_name}: {e}") from None
    out: Any = sys.stdout.buffer
    stream = None
    if follow:
        _stop_on_signals()
    try:
        stream = client.logs(container_id, follow=follow, tail=tail)
        for chunk in stream:
            out.write(chunk)
            out.flush()
    except errors.EngineError as e:
        raise click.ClickException(f"cannot read the logs of {name}: {e}") from None
    except KeyboardInterrupt:
        pass
    finally:
        if stream is not None:
            stream.close()
        client.close()
