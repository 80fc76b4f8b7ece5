"""Click options derived from ``settings.Settings``: one definition per knob.

For each field the option's flag (``settings.flag``), help text (the field's docstring), default
and environment variable (``RECONCILER_<FIELD>``) come from the field itself; a bad value is
refused by ``Settings``' own validation, reported as a usage error naming the flag.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args, get_origin

import click
import pydantic

from reconciler import settings as settings_mod
from reconciler.settings import Settings

F = Callable[..., Any]


def _click_type(annotation: Any) -> Any:
    base = annotation
    if get_origin(base) is typing.Annotated:
        base = get_args(base)[0]
    if get_origin(base) is Literal:
        return click.Choice([str(v) for v in get_args(base)])
    return {float: float, int: int, str: str, bool: bool}[base]


def option_for(name: str) -> Callable[[F], F]:
    """The click option of ``Settings`` field ``name``."""
    info = Settings.__pydantic_fields__[name]  # type: ignore[attr-defined]
    return click.option(
        settings_mod.flag(name),
        name,
        type=_click_type(info.rebuild_annotation()),
        default=info.default,
        show_default=True,
        envvar=settings_mod.env_var(name),
        show_envvar=True,
        help=settings_mod.describe(name),
    )


def settings_options(names: Iterable[str]) -> Callable[[F], F]:
    """Decorate a command with the options of ``names`` (in that order in ``--help``)."""

    def decorate(f: F) -> F:
        for name in reversed(list(names)):
            f = option_for(name)(f)
        return f

    return decorate


def daemon_option_names() -> list[str]:
    return [n for n in settings_mod.field_names() if n not in settings_mod.NOT_DAEMON_OPTIONS]


def build(base: Settings, values: dict[str, Any]) -> Settings:
    """``base`` with the option ``values`` applied; a bad value is a usage error."""
    try:
        return dataclasses.replace(base, **values)
    except pydantic.ValidationError as e:
        problems = []
        for error in e.errors():
            if not error["loc"]:  # a rule across fields names its flags in the message
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            problems.append(f"{settings_mod.flag(str(error['loc'][0]))}: {error['msg']}")
        raise click.UsageError("; ".join(problems)) from None
