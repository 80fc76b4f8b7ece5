"""``reconciler run`` and ``reconciler plan``: the daemon's commands.

Kept apart from ``cli`` (the row-editing commands) so each file stays readable; ``cli`` imports
this module at its end, which registers the commands on the ``reconciler`` group.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from reconciler.cli import logs, options
from reconciler.cli.main import _settings, _store, main
from reconciler.db import store as store_mod
from reconciler.planning import describe as plan_format
from reconciler.runtime import controller, daemon
from reconciler.settings import Settings
from reconciler.spec import policy as spec_policy


def _with_options(ctx: click.Context, **values: Any) -> Settings:
    """The settings of ``--database-url`` with the daemon options applied (the policy file
    read and checked: a bad one is a usage error before anything starts)."""
    settings = options.build(_settings(ctx), values)
    try:
        controller.load_policy(settings.policy_file)
    except spec_policy.PolicyError as e:
        raise click.BadParameter(str(e), param_hint="--policy") from None
    ctx.obj.settings = settings
    return settings


_daemon_options = options.settings_options(options.daemon_option_names())


@main.command()
@_daemon_options
@click.option("--once", is_flag=True, help="Run one pass after the first refresh, then exit.")
@options.settings_options(["log_format"])
@click.pass_context
def run(ctx: click.Context, once: bool, **values: Any) -> None:
    """Keep the nodes converged onto the desired rows until SIGTERM/SIGINT."""
    settings = _with_options(ctx, **values)
    logs.configure(
        fmt=settings.log_format,
        level=logging.INFO if ctx.find_root().params["verbose"] < 2 else logging.DEBUG,
    )
    the_daemon = daemon.Daemon(store=_store(ctx), settings=settings)
    if once:
        try:
            result = the_daemon.run_once()
        except store_mod.NotLeader as e:
            raise click.ClickException(str(e)) from None
        click.echo(result.plan.summary())
        if result.failed:
            raise click.ClickException(f"{result.failed} action(s) failed; see the log above")
        return
    the_daemon.run()


@main.command()
@_daemon_options
@click.pass_context
def plan(ctx: click.Context, **values: Any) -> None:
    """Print what one pass would do now, changing nothing."""
    settings = _with_options(ctx, **values)
    the_daemon = daemon.Daemon(store=_store(ctx), settings=settings)
    the_plan = the_daemon.plan()
    for line in plan_format.lines(the_plan):
        click.echo(line)
    click.echo(the_plan.summary())
