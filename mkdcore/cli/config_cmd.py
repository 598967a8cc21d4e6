"""``mkd config show|schema``: the resolved config and its JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mkdcore.cli.options import config_overrides


@click.group()
def config() -> None:
    """Inspect experiment configs."""


@config.command("show")
@click.argument("config_file", type=click.Path(path_type=Path), required=False)
@config_overrides
def show(config_file: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    from mkdcore.config import load_config

    cfg = load_config(config_file, overrides)
    click.echo(cfg.to_yaml(), nl=False)


@config.command("schema")
def schema() -> None:
    """Print the JSON schema of the experiment config."""
    from mkdcore.config import ExperimentConfig

    click.echo(json.dumps(ExperimentConfig.model_json_schema(), indent=2))
