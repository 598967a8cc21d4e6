"""``mkd results [RUNS_DIR]``: every finished experiment, one comparable table per group."""

from __future__ import annotations

import json
from pathlib import Path

import click

#: how to get a good results.json back (the report stage always rewrites it)
REMEDY = "delete it, or rewrite it with `mkd run CONFIG --force report`"


def staleness(res: dict) -> str | None:
    """Why an experiment's numbers are no longer what its stages would give now (an
    upstream stage was redone, the data or the code changed), None when current, or a
    note when the file predates the check."""
    from mkdcore.stages import provenance

    report_stage = res.get("report_stage")  # absent in results.json files older than this check
    if report_stage is None:
        return "unknown (made before mkd recorded provenance)"
    fresh = provenance.check(Path(report_stage))
    return None if fresh else fresh.reason


def _rows(path: Path, res: dict) -> list[dict]:
    """One row per model of one experiment's results.json."""
    s = res["setting"]
    stale = staleness(res)
    rows = []
    for name, m in res["models"].items():
        backbone = m.get("backbone", {}).get("name") if isinstance(m.get("backbone"), dict) else None
        rows.append({
            "experiment": res["experiment"], "group": res.get("group"), "dataset": res["dataset"]["split"],
            "model": name, "role": m["role"], "student": backbone or ("teacher" if m["role"] == "teacher" else "-"),
            "distiller": m.get("distiller") or "-", "way": s["way"], "shots": s["shot"], "episodes": s["episodes"],
            "accuracy": m["accuracy"], "ci95": m["ci95"], "params": m.get("params"), "gmacs": m.get("gmacs"),
            "stale": stale,
        })
    return rows


@click.command()
@click.argument("runs_dir", type=click.Path(path_type=Path), default=Path("runs"))
@click.option("--group", "groups", multiple=True, help="Only this group (repeatable); ungrouped runs are group '-'.")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json"]), default="table", show_default=True,
              help="table fits the terminal; md, csv and json give full values.")
@click.option("--json", "as_json", is_flag=True, help="Print every run's rows as JSON, not pooled over seeds.")
@click.option("--students-only", is_flag=True, help="Leave the teachers out.")
@click.option("--width", type=click.IntRange(min=40), default=None, help="Table width (default: the terminal's, at most 80 when not a terminal).")
@click.option("--plot", type=click.Path(path_type=Path), help="Also write the accuracy-vs-GMACs plot to this file.")
def results(runs_dir: Path, groups: tuple[str, ...], fmt: str, as_json: bool, students_only: bool, width: int | None,
            plot: Path | None) -> None:
    """Every finished experiment under RUNS_DIR, one table per group: the config keys
    whose values differ between the group's runs, accuracy (mean ± std over runs that
    differ only by seed, else ± 95% CI), params and GMACs. Writes nothing unless --plot."""
    from mkdcore.errors import DataError
    from mkdcore.report import load_results
    from mkdcore.results_table import (
        by_group,
        caption,
        csv_text,
        group_rows,
        load_run,
        markdown,
        text_table,
    )

    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: no such runs directory")
    keep = lambda r: not (students_only and r["role"] != "student")
    runs = []
    for path in sorted(runs_dir.glob("*/results.json")):
        res = load_results(path, REMEDY)
        run = load_run(path, res, [r for r in _rows(path, res) if keep(r)])
        if not groups or (run.group or "-") in groups:
            runs.append(run)
    if as_json:
        click.echo(json.dumps([r for run in runs for r in run.rows], indent=2))
        return
    tables = {g: group_rows(members) for g, members in by_group(runs).items()}
    rows = [r for t in tables.values() for r in t]
    if fmt == "json":
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    elif fmt == "csv":
        click.echo(csv_text(rows), nl=False)
    elif not rows:
        click.echo(f"no finished experiments under {runs_dir} (run one with `mkd run CONFIG`)")
    else:
        width = width or _terminal_width()
        for g, t in tables.items():
            n = len({name for r in t for name in r.runs})
            title = f"group {g}" if g is not None else "ungrouped"
            click.echo(f"{'## ' if fmt == 'md' else ''}{title} ({n} run{'s' * (n != 1)})\n")
            click.echo(markdown(t) if fmt == "md" else text_table(t, width))
            click.echo(f"\n{caption(t)}\n")
        for line in sorted({s for r in rows for s in r.stale}):
            click.echo(f"stale*: {line}; `mkd run` its config to bring it up to date")
    if plot is not None:
        from mkdcore.report import plot_acc_vs_gmacs

        labelled = [{**r, "label": f"{r['experiment']}/{r['model']}"} for run in runs for r in run.rows]
        click.echo(f"plot: {plot_acc_vs_gmacs(labelled, plot, 'accuracy vs cost', label_key='label')}", err=fmt != "table")


def _terminal_width() -> int:
    """The terminal's width; 80 when output goes to a file or pipe (logs, READMEs)."""
    import shutil
    import sys

    return shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
