"""``mkd plugins``: list every registered component."""

from __future__ import annotations

import json

import click

from mkdcore.registry import KINDS


@click.command()
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(kind: str | None, as_json: bool) -> None:
    """List plugins: name, kind, package, version, options."""
    from mkdcore.plugins import get_manager

    specs = get_manager().list_plugins(kind)
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in specs], indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mkd plugins", show_lines=False)
    for col in ("kind", "name", "package", "version", "options"):
        table.add_column(col, overflow="fold")
    for s in specs:
        table.add_row(s.kind, s.name, s.package, s.version, s.options_summary())
    Console().print(table)
