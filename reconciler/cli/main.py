"""The ``reconciler`` command line: thin click commands over the store.

Each command parses and validates *all* of its input first, then calls one store function inside
one transaction, so bad input leaves the database untouched. A command that reads or writes rows
gets its ``db.Store`` from :func:`_store`, which refuses to go on unless the schema is at head;
the daemon's ``run`` and ``plan`` commands (``cli.run``) take the same path::

    the_daemon = daemon.Daemon(store=_store(ctx), settings=settings)

Errors a person can fix are ``click.ClickException`` (exit 1) or ``click.UsageError`` (exit 2),
printed on stderr and naming the field at fault. Printing rows is ``reconciler.cli.output``'s job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import IO, Any

import click
import yaml

from reconciler import __version__, docker_api, domain, errors, spec
from reconciler import settings as settings_mod
from reconciler.cli import logs, options, output, wait
from reconciler.db import migrate
from reconciler.db import store as store_mod
from reconciler.runtime import controller
from reconciler.spec import model as spec_model
from reconciler.spec import policy as spec_policy

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _State:
    settings: settings_mod.Settings
    store: store_mod.Store | None = None


class _Group(click.Group):
    """A group that turns database failures (unreachable, locked, a constraint violated by a
    concurrent writer) into one line on stderr; ``-vv`` logs the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except store_mod.DatabaseURLError as e:
            raise click.ClickException(str(e)) from None
        except store_mod.DatabaseError as e:
            log.debug("database error", exc_info=True)
            first_line = str(e.orig or e).strip().splitlines()[0]
            raise click.ClickException(f"database error: {first_line}") from None


def _settings(ctx: click.Context) -> settings_mod.Settings:
    return ctx.find_object(_State).settings  # type: ignore[union-attr]


def _store(ctx: click.Context) -> store_mod.Store:
    """The store of ``--database-url``, once the schema is known to be at head."""
    state = ctx.find_object(_State)
    assert state is not None, "the root command sets up the state"
    if state.store is None:
        store = store_mod.Store.open(state.settings.database_url)
        ctx.find_root().call_on_close(store.close)
        try:
            store.require_head()
        except store_mod.SchemaMismatch as e:
            raise click.ClickException(str(e)) from None
        state.store = store
    return state.store


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@options.option_for("database_url")
@click.option("-v", "--verbose", count=True, help="Log on stderr: -v info, -vv debug.")
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def main(ctx: click.Context, database_url: str, verbose: int) -> None:
    """Converge plain Docker engines onto desired containers kept in SQL."""
    logs.configure(level={0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    ctx.obj = _State(settings=settings_mod.Settings(database_url=database_url))


# -- db --------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create and migrate the schema."""


def _where(ctx: click.Context) -> str:
    return store_mod.display_url(_settings(ctx).database_url)


@db.command("upgrade")
@click.argument("rev", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, rev: str) -> None:
    """Migrate the database up to REV (default: head), creating it if needed."""
    url = _settings(ctx).database_url
    before = migrate.current(url)
    try:
        migrate.upgrade(url, rev)
    except migrate.MigrationError as e:
        raise click.ClickException(str(e)) from None
    after = migrate.current(url)
    if before == after:
        click.echo(f"{_where(ctx)} is already at {after}")
    else:
        click.echo(f"{_where(ctx)} has been upgraded from {before or '(empty)'} to {after}")


@db.command("downgrade")
@click.argument("rev")
@click.pass_context
def db_downgrade(ctx: click.Context, rev: str) -> None:
    """Migrate the database down to REV ("base" drops every table)."""
    url = _settings(ctx).database_url
    before = migrate.current(url)
    try:
        migrate.downgrade(url, rev)
    except migrate.MigrationError as e:
        raise click.ClickException(str(e)) from None
    after = migrate.current(url)
    click.echo(f"{_where(ctx)} has been downgraded from {before} to {after or '(empty)'}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the database's schema revision, whether it is at head, and its installation id."""
    url = _settings(ctx).database_url
    found, head = migrate.current(url), migrate.head()
    identity = migrate.installation(url)
    where = f", installation {identity}" if identity else ""
    if found == head:
        click.echo(f"{found} (head){where}")
    else:
        click.echo(f"{found or '(empty)'} (head is {head}; {migrate.UPGRADE_HINT}){where}")


# -- node ------------------------------------------------------------------------------------


@main.group()
def node() -> None:
    """Register Docker engines and take them in and out of scheduling."""


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"must look like KEY=VALUE, got {pair!r}", param_hint="--label"
            )
        labels[key] = value
    return labels


def _check_url(url: str, *, tls: bool, allow_insecure: bool) -> None:
    """Refuse URLs the node layer could not use, and plain TCP off this machine, with the
    check the node layer makes itself (the parser that connects: ``docker_api.check_url``)."""
    try:
        docker_api.check_url(url, tls=tls, allow_insecure=allow_insecure)
    except errors.InsecureEngineURL as e:
        raise click.BadParameter(
            f"{e} (give --tls-ca/--tls-cert/--tls-key, or --allow-insecure-tcp)", param_hint="URL"
        ) from None
    except errors.BadEngineURL as e:
        raise click.BadParameter(str(e), param_hint="URL") from None


_PEM = click.Path(exists=True, dir_okay=False, resolve_path=True)


@node.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Node label.")
@click.option("--tls-ca", type=_PEM, help="CA certificate that signed the engine's certificate.")
@click.option("--tls-cert", type=_PEM, help="Client certificate (with --tls-key).")
@click.option("--tls-key", type=_PEM, help="Client key (with --tls-cert).")
@click.option("--allow-insecure-tcp", is_flag=True, help="Allow plain tcp:// to another host.")
@click.pass_context
def node_add(
    ctx: click.Context,
    name: str,
    url: str,
    labels: tuple[str, ...],
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    allow_insecure_tcp: bool,
) -> None:
    """Register the Docker engine at URL as node NAME (unix://, tcp://host:port, ssh://)."""
    if len(name) > spec_model.MAX_NAME_LENGTH or not spec_model.NODE_NAME_RE.match(name):
        raise click.BadParameter(
            f"must match {spec_model.NODE_NAME_RE.pattern}, got {name!r}", param_hint="NAME"
        )
    if (tls_cert is None) != (tls_key is None):
        raise click.BadParameter("give both or neither", param_hint="--tls-cert/--tls-key")
    _check_url(url, tls=bool(tls_ca or tls_cert), allow_insecure=allow_insecure_tcp)
    row = domain.NodeRow(
        name=domain.NodeName(name),
        url=url,
        labels=_labels(labels),
        tls_ca_cert=tls_ca,
        tls_client_cert=tls_cert,
        tls_client_key=tls_key,
        allow_insecure_tcp=allow_insecure_tcp,
    )
    try:
        _store(ctx).add_node(row)
    except store_mod.NodeExists as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"node {name} has been added")


_POLICY = click.option(
    "--policy",
    "policy_file",
    default="",
    metavar="FILE",
    envvar=settings_mod.env_var("policy_file"),
    show_envvar=True,
    help="Admission policy to check rows against (the daemon's --policy); default: baseline.",
)


def _policy(path: str) -> spec_policy.Policy:
    try:
        return controller.load_policy(path)
    except spec_policy.PolicyError as e:
        raise click.BadParameter(str(e), param_hint="--policy") from None


def _check_policy(
    items: list[domain.DesiredContainer], policy: spec_policy.Policy, *, source: str
) -> None:
    """Refuse the whole file when the policy refuses an item (the daemon would fail it)."""
    problems = [
        f"{source}: {_item(index, {'name': item.name})}: {refused}"
        for index, item in enumerate(items, start=1)
        if (refused := spec_policy.admit(item, policy).error) is not None
    ]
    if problems:
        raise click.ClickException("\n".join(problems))


_OUTPUT = click.option(
    "-o", "--output", "fmt", type=click.Choice(output.FORMATS), default="table", show_default=True
)


@node.command("ls")
@_OUTPUT
@click.pass_context
@click.option("-q", "--quiet", is_flag=True, help="Print node names only.")
def node_ls(ctx: click.Context, fmt: output.Format, quiet: bool) -> None:
    """List nodes with their health and engine version."""
    listing = _store(ctx).list_node_status()
    if quiet:
        for item in listing:
            click.echo(item.name)
        return
    output.emit(output.node_rows(listing), fmt=fmt, columns=output.NODE_COLUMNS)


@node.command("rm")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Remove it even though managed containers run there (they are left running, unseen; "
    "their rows are rescheduled elsewhere).",
)
@click.pass_context
def node_rm(ctx: click.Context, name: str, force: bool) -> None:
    """Stop following node NAME (refused while managed containers run there; drain it first)."""
    store = _store(ctx)
    running = store.running_on(name)
    if running and not force:
        raise click.ClickException(
            f"node {name} still runs {len(running)} managed container(s) "
            f"({', '.join(running[:5])}{', …' if len(running) > 5 else ''}): "
            f"drain it first (reconciler node drain {name}), or use --force"
        )
    if not store.remove_node(name):
        raise click.ClickException(f"no node named {name!r}")
    click.echo(f"node {name} has been removed")


@node.command("drain")
@click.argument("name")
@click.pass_context
def node_drain(ctx: click.Context, name: str) -> None:
    """Move the containers of node NAME's unpinned rows to other nodes (each replacement is
    started before its original is removed) and place nothing new there; pinned rows stay."""
    store = _store(ctx)
    if not store.drain_node(name):
        raise click.ClickException(f"no node named {name!r}")
    click.echo(f"node {name} is draining")
    pinned = store.pinned_to(name)
    if pinned:
        click.echo(f"pinned rows that stay on {name}: {', '.join(pinned)}")


def _set_schedulable(ctx: click.Context, name: str, *, schedulable: bool) -> None:
    if not _store(ctx).set_schedulable(name, schedulable=schedulable):
        raise click.ClickException(f"no node named {name!r}")
    click.echo(f"node {name} has been {'uncordoned' if schedulable else 'cordoned'}")


@node.command("cordon")
@click.argument("name")
@click.pass_context
def node_cordon(ctx: click.Context, name: str) -> None:
    """Place no new containers on node NAME (the ones there stay)."""
    _set_schedulable(ctx, name, schedulable=False)


@node.command("uncordon")
@click.argument("name")
@click.pass_context
def node_uncordon(ctx: click.Context, name: str) -> None:
    """Let reconciler place containers on node NAME again (ends a drain; moves nothing back)."""
    _set_schedulable(ctx, name, schedulable=True)


# -- desired containers ----------------------------------------------------------------------


def _read_desired(
    stream: IO[str], services: list[domain.ServiceDef] | None = None
) -> list[domain.DesiredContainer]:
    """Parse and validate every item of a YAML list; report all problems at once.

    An item with ``kind: service`` is a service (appended to ``services``); ``kind:
    container`` or no ``kind`` is a desired container.
    """
    source = stream.name
    try:
        data = yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise click.ClickException(f"{source}: invalid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise click.ClickException(
            f"{source}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    if not isinstance(data, list):
        got = spec_model.show(data)
        raise click.ClickException(
            f"{source}: must be a YAML list of desired containers, got {got}"
        )
    items: list[domain.DesiredContainer] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(data, start=1):
        where = f"{source}: {_item(index, raw)}"
        kind = raw.get("kind", "container") if isinstance(raw, dict) else "container"
        if kind not in ("container", "service") or (kind == "service" and services is None):
            problems.append(f"{where}: kind: must be 'container' or 'service', got {kind!r}")
            continue
        if isinstance(raw, dict):
            raw = {key: value for key, value in raw.items() if key != "kind"}
        if kind == "service" and services is not None:
            try:
                service = spec.validate_service_strict(raw)
            except spec.SpecError as e:
                problems += [f"{where}: {problem}" for problem in e.problems]
                continue
            if service.name in first_seen:
                problems.append(f"{where}: name: also used by item {first_seen[service.name]}")
            first_seen.setdefault(service.name, index)
            services.append(service)
            continue
        try:
            item = spec.validate_row_strict(raw)
        except spec.SpecError as e:
            problems += [f"{where}: {problem}" for problem in e.problems]
            continue
        if item.name in first_seen:
            problems.append(f"{where}: name: also used by item {first_seen[item.name]}")
        first_seen.setdefault(item.name, index)
        items.append(item)
    if problems:
        raise click.ClickException("\n".join(problems))
    return items


def _item(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"item {index} ({name})" if isinstance(name, str) else f"item {index}"


def _check_nodes(
    known: Collection[str], items: list[domain.DesiredContainer], *, source: str
) -> None:
    problems = [
        f"{source}: {_item(index, {'name': item.name})}: node: unknown node {item.node!r} "
        f"(known: {', '.join(sorted(known)) or 'none; add one with `reconciler node add`'})"
        for index, item in enumerate(items, start=1)
        if item.node is not None and item.node not in known
    ]
    if problems:
        raise click.ClickException("\n".join(problems))


@main.command()
@click.option(
    "-f", "--filename", "stream", type=click.File("r"), required=True, help="YAML list, or -."
)
@click.option("--prune", is_flag=True, help="Also delete desired rows absent from the file.")
@click.option(
    "--wait", "wait_", is_flag=True,
    help="Then show progress until every applied row runs; exit 1 if one fails or time runs out.",
)  # fmt: skip
@click.option(
    "--timeout", default="60", show_default=True, metavar="DURATION",
    help="How long --wait waits: seconds, or 60s, 2m.",
)  # fmt: skip
@_POLICY
@click.pass_context
def apply(
    ctx: click.Context, stream: IO[str], prune: bool, wait_: bool, timeout: str, policy_file: str
) -> None:
    """Create or update desired containers from a YAML list, in one transaction."""
    try:
        seconds = settings_mod.parse_duration(timeout)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--timeout") from None
    policy = _policy(policy_file)
    store = _store(ctx)
    services: list[domain.ServiceDef] = []
    items = _read_desired(stream, services)
    _check_policy(items, policy, source=stream.name)
    result, pruned = store.apply_desired(
        items,
        prune=prune,
        check_nodes=lambda known: _check_nodes(known, items, source=stream.name),
    )
    for word, names in (
        ("created", result.created),
        ("updated", result.updated),
        ("pruned", pruned),
    ):
        for name in names:
            click.echo(f"{name} {word}")
    click.echo(
        f"created {len(result.created)}, updated {len(result.updated)}, "
        f"unchanged {len(result.unchanged)}, pruned {len(pruned)}"
    )
    if services or prune:  # services: their own table (a second transaction); --prune covers it
        created, updated, gone = store.apply_services(services, prune=prune)
        for word, names in (("created", created), ("updated", updated), ("pruned", gone)):
            for name in names:
                click.echo(f"service {name} {word}")
    if wait_:
        _wait_until_running(store, items, seconds=seconds, timeout=timeout)


def _wait_until_running(
    store: store_mod.Store, items: list[domain.DesiredContainer], *, seconds: float, timeout: str
) -> None:
    outcome = wait.wait(store, items, timeout=seconds)
    if outcome.ok:
        click.echo(f"{len(outcome.done)} row(s) ready")
        return
    problems = [f"{name} failed: {message}" for name, message in outcome.failed]
    if outcome.waiting and not outcome.failed:
        problems.insert(0, f"timed out after {timeout}; not ready:")
    problems += [f"{name} is {state}" for name, state in outcome.waiting]
    raise click.ClickException("\n".join(problems))


@main.command()
@click.argument("name", required=False)
@_OUTPUT
@_POLICY
@click.option(
    "--show-secrets", is_flag=True, help="Show env values of keys that look secret (-o json/yaml)."
)
@click.pass_context
def get(
    ctx: click.Context, name: str | None, fmt: output.Format, policy_file: str, show_secrets: bool
) -> None:
    """Show desired containers (all, or NAME) with the status the controller reported."""
    policy = _policy(policy_file)
    items = _store(ctx).list_desired_with_status(name)
    if name is not None and not items:
        raise click.ClickException(f"no desired container named {name!r}")
    rows = output.desired_rows(items, policy=policy, show_secrets=show_secrets)
    output.emit(rows, fmt=fmt, columns=output.DESIRED_COLUMNS)


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Delete desired containers by name; reconciler then removes their containers."""
    missing = _store(ctx).delete_desired(names)
    if missing:
        raise click.ClickException(f"no desired container named {', '.join(map(repr, missing))}")
    for name in dict.fromkeys(names):
        click.echo(f"{name} deleted")
