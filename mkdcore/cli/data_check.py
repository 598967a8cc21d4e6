"""``mkd data check ROOT``: the dataset against its split files, as a table or JSON."""

from __future__ import annotations

import json
import sys

import click

MAX_ERRORS_SHOWN = 30


@click.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--split", "split", default=None, help="Split folder under ROOT/splits (default: the only one; shipped ones also work).")
@click.option("--split-id", default=None, help="Split file number, e.g. 03 (default: the one found in the folder).")
@click.option("--frames", default=8, show_default=True, help="Frames each video needs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of a table.")
def check(root: str, split: str | None, split_id: str | None, frames: int, as_json: bool) -> None:
    """Check ROOT: classes and videos found vs listed, unreadable or too few frames,
    empty class folders, modality folders that do not match RGB, feature shapes.

    Exits non-zero when anything is wrong.
    """
    from mkdcore.data.checker import check_dataset

    report = check_dataset(root, split=split, split_id=split_id, frames=frames)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        _print_table(report)
    if not report.ok:
        sys.exit(1)


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{report.root}  split {report.split} ({report.split_id})")
    for col in ("split", "classes", "videos", "missing", "too few", "unreadable", "modality", "features"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for which, r in report.splits.items():
        if not r.present:
            table.add_row(which, "-", "-", "-", "-", "-", "-", "-")
            continue
        table.add_row(
            which,
            f"{r.classes}/{r.classes_listed}",
            f"{r.videos}/{r.videos_listed}",
            str(r.missing_videos),
            str(r.too_few_frames),
            str(r.unreadable_videos),
            str(r.modality_mismatch),
            str(r.bad_features),
        )
    console.print(table)
    console.print(f"modalities: {', '.join(report.modalities)}" + (f"; features: {', '.join(report.features)}" if report.features else ""))
    for msg in report.errors[:MAX_ERRORS_SHOWN]:
        console.print(f"[red]error:[/red] {msg}", markup=True, highlight=False)
    if len(report.errors) > MAX_ERRORS_SHOWN:
        console.print(f"... and {len(report.errors) - MAX_ERRORS_SHOWN} more errors (use --json for all)")
    console.print("[green]OK[/green]" if report.ok else f"[red]{len(report.errors)} problem(s)[/red]")
