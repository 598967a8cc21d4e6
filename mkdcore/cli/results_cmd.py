"""``mkd results [RUNS_DIR]``: one table over every finished experiment."""

from __future__ import annotations

import json
from pathlib import Path

import click

#: how to get a good results.json back (the report stage always rewrites it)
REMEDY = "delete it, or rewrite it with `mkd run CONFIG --force report`"


def collect(runs_dir: Path) -> list[dict]:
    from mkdcore.report import load_results

    rows = []
    for path in sorted(runs_dir.glob("*/results.json")):
        rows += _rows(path, load_results(path, REMEDY))
    return rows


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--students-only", is_flag=True, help="Leave the teachers out.")
@click.option("--plot", type=click.Path(path_type=Path), help="Accuracy-vs-GMACs plot path (default RUNS_DIR/results.png).")
def results(runs_dir: Path, as_json: bool, students_only: bool, plot: Path | None) -> None:
    """Dataset, student, distiller, shots, accuracy ± CI, params and GMACs of every
    finished experiment under RUNS_DIR, as the paper's table reads."""
    from mkdcore.errors import DataError
    from mkdcore.report import fmt_gmacs, fmt_params, plot_acc_vs_gmacs

    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: no such runs directory")
    rows = [r for r in collect(runs_dir) if not (students_only and r["role"] != "student")]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no finished experiments under {runs_dir} (run one with `mkd run CONFIG`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mkd results ({runs_dir})")
    cols = ["group", "experiment", "dataset", "model", "student", "distiller", "shots", "accuracy % (95% CI)", "params", "GMACs / episode"]
    for c in cols:
        table.add_column(c)
    rows.sort(key=lambda r: (r["group"] or "", r["experiment"]))
    for r in rows:
        mark = " (stale)" if r["stale"] else ""
        table.add_row(r["group"] or "-", r["experiment"], r["dataset"], r["model"], str(r["student"]), r["distiller"], f"{r['way']}-way {r['shots']}-shot",
                      f"{r['accuracy']:.2f} ± {r['ci95']:.2f}{mark}", fmt_params(r["params"]), fmt_gmacs(r["gmacs"]))
    Console().print(table)
    for experiment, why in sorted({(r["experiment"], r["stale"]) for r in rows if r["stale"]}):
        click.echo(f"stale: {experiment}: {why}; `mkd run` its config to bring it up to date")
    labelled = [{**r, "label": f"{r['experiment']}/{r['model']}"} for r in rows]
    out = plot_acc_vs_gmacs(labelled, plot or runs_dir / "results.png", "accuracy vs cost", label_key="label")
    click.echo(f"plot: {out}")
