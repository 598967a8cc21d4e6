"""``mkd plugins``: list every registered component."""

from __future__ import annotations

import json

import click

from mkdcore.registry import KINDS


@click.command()
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(kind: str | None, as_json: bool) -> None:
    """List plugins: name, kind, package, version, options; then those that failed to
    load (skipped; they may be what a config is missing) and those disabled."""
    from mkdcore.plugins import get_manager

    manager = get_manager()
    specs = manager.list_plugins(kind)
    broken = list(manager.broken.values())  # listed under any --kind: they may provide it
    if as_json:
        rows = [s.as_dict() for s in specs] + [b.as_dict() for b in broken]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="mkd plugins", show_lines=False)
    for col in ("kind", "name", "package", "version", "options"):
        table.add_column(col, overflow="fold")
    for s in specs:
        table.add_row(s.kind, s.name, s.package, s.version, s.options_summary())
    console.print(table)
    if broken:
        failed = Table(title="plugins that failed to load (skipped)", show_lines=False)
        for col in ("plugin", "package", "version", "error"):
            failed.add_column(col, overflow="fold")
        for b in broken:
            failed.add_row(b.name, b.package, b.version, b.error)
        console.print(failed)
    if manager.disabled:
        console.print(f"disabled by MKD_DISABLE_PLUGINS: {', '.join(manager.disabled)}")
