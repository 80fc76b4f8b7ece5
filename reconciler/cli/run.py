"""``reconciler run`` and ``reconciler plan``: the daemon's commands.

Kept apart from ``cli`` (the row-editing commands) so each file stays readable; ``cli`` imports
this module at its end, which registers the commands on the ``reconciler`` group.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import click

from reconciler import settings as config
from reconciler.cli import logs
from reconciler.cli.main import _settings, _store, main
from reconciler.planning import describe as plan_format
from reconciler.runtime import daemon
from reconciler.settings import LogFormat


def _daemon_options(f: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--interval",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds between passes when nothing wakes the loop earlier.",
        ),
        click.option(
            "--refresh-interval",
            type=click.FloatRange(min=0.5),
            default=30.0,
            show_default=True,
            help="Seconds between forced refreshes of one node.",
        ),
        click.option(
            "--docker-timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Timeout of every Docker API call, in seconds.",
        ),
        click.option(
            "--max-actions-per-node",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Docker actions in flight at once on one node.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _with_options(
    ctx: click.Context,
    *,
    interval: float,
    refresh_interval: float,
    docker_timeout: float,
    max_actions_per_node: int,
    log_format: LogFormat = "text",
) -> config.Settings:
    """The settings of ``--database-url`` with the daemon options applied."""
    settings = dataclasses.replace(
        _settings(ctx),
        reconcile_interval=interval,
        refresh_interval=refresh_interval,
        docker_timeout=docker_timeout,
        max_actions_per_node=max_actions_per_node,
        log_format=log_format,
    )
    ctx.obj.settings = settings
    return settings


@main.command()
@_daemon_options
@click.option("--once", is_flag=True, help="Run one pass after the first refresh, then exit.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line, for log collectors.",
)
@click.pass_context
def run(ctx: click.Context, once: bool, log_format: LogFormat, **options: Any) -> None:
    """Keep the nodes converged onto the desired rows until SIGTERM/SIGINT."""
    settings = _with_options(ctx, log_format=log_format, **options)
    logs.configure(
        fmt=log_format,
        level=logging.INFO if ctx.find_root().params["verbose"] < 2 else logging.DEBUG,
    )
    the_daemon = daemon.Daemon(engine=_store(ctx), settings=settings)
    if once:
        result = the_daemon.run_once()
        click.echo(result.plan.summary())
        if result.failed:
            raise click.ClickException(f"{result.failed} action(s) failed; see the log above")
        return
    the_daemon.run()


@main.command()
@_daemon_options
@click.pass_context
def plan(ctx: click.Context, **options: Any) -> None:
    """Print what one pass would do now, changing nothing."""
    settings = _with_options(ctx, **options)
    the_daemon = daemon.Daemon(engine=_store(ctx), settings=settings)
    the_plan = the_daemon.plan()
    for line in plan_format.lines(the_plan):
        click.echo(line)
    click.echo(the_plan.summary())
