"""Options shared by every command that takes a config."""

from __future__ import annotations

from typing import Any, Callable

import click


def config_overrides(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--set a.b=c`` (repeatable): override config values, parsed as YAML."""
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set training.lr=0.001 (repeatable).",
    )(func)
