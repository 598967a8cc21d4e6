"""``mkd run CONFIG``: run an experiment in-process (the embedded default)."""

from __future__ import annotations

from pathlib import Path

import click

from mkdcore.cli.options import config_overrides


@click.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--stages", default="", help="Comma-separated stages or kinds to run (with their dependencies); default: all.")
@click.option("--force", default="", help="Comma-separated stages or kinds to redo even if finished.")
@click.option("--list", "list_only", is_flag=True, help="Print the stage DAG with keys and status, run nothing.")
@config_overrides
def run(config_file: Path, stages: str, force: str, list_only: bool, overrides: tuple[str, ...]) -> None:
    """Run the experiment's stages in-process; finished stages are skipped, an
    interrupted stage resumes from its last checkpoint."""
    from mkdcore.config import load_config
    from mkdcore.engine import Terminated
    from mkdcore.errors import TERMINATED_EXIT_CODE
    from mkdcore.stages.dag import plan
    from mkdcore.stages.runner import run_experiment

    cfg = load_config(config_file, overrides)
    if list_only:
        nodes = plan(cfg)
        by_name, memo = {n.name: n for n in nodes}, {}
        for node in nodes:
            fresh = node.freshness(by_name, memo)  # each folder (and the dataset) checked once
            state = "done" if fresh else "todo"
            deps = ", ".join(node.deps) or "-"
            why = "" if fresh else f"  ({fresh.reason})"
            click.echo(f"{state:4s}  {node.name:18s} {node.key}  <- {deps}{why}")
        return
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    try:
        nodes, ran = run_experiment(cfg, split(stages) or None, split(force), echo=lambda m: click.echo(m, err=True))
    except Terminated as exc:
        click.echo(f"stopped: {exc}", err=True)
        raise SystemExit(TERMINATED_EXIT_CODE)
    results = Path(cfg.runtime.runs_dir) / cfg.name / "results.json"
    if "report" not in ran and nodes["report"].freshness(nodes) and results.is_file():
        from mkdcore.report import load_results, print_table, rows_of

        finished = load_results(results, f"rewrite it with `mkd run {config_file} --force report`")
        print_table(rows_of(finished), f"{cfg.name} (finished earlier)")
        click.echo(f"report: {results.parent / 'report.md'}")
