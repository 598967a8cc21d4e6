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
@click.option("--origin", is_flag=True, help="Name the file (or --set, or default) that set each value.")
@config_overrides
def show(config_file: Path | None, origin: bool, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (base files merged, defaults filled in, overrides
    applied) as YAML."""
    from mkdcore.config import config_from_dict, resolve_config

    resolved = resolve_config(config_file, overrides)
    cfg = config_from_dict(resolved.data, str(config_file) if config_file is not None else "<defaults>")
    if not origin:
        click.echo(cfg.to_yaml(), nl=False)
        return
    from mkdcore.config_files import annotated_yaml

    click.echo(annotated_yaml(cfg.model_dump(mode="json"), resolved), nl=False)


@config.command("schema")
def schema() -> None:
    """Print the JSON schema of the experiment config."""
    from mkdcore.config import ExperimentConfig

    click.echo(json.dumps(ExperimentConfig.model_json_schema(), indent=2))
