"""``mkd run CONFIG``: run an experiment in-process (the embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mkdcore.cli.options import config_overrides

if TYPE_CHECKING:
    from mkdcore.config import ExperimentConfig


@click.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--stages", default="", help="Comma-separated stages or kinds to run (with their dependencies); default: all.")
@click.option("--force", default="", help="Comma-separated stages or kinds to redo even if finished.")
@click.option("--list", "list_only", is_flag=True, help="Print the stage DAG with keys and status, run nothing.")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Run training and evaluate stages on N devices (ranks); same as --set runtime.devices=N.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2",
              help="Run the grid over these values one after another, as one group (repeatable; "
                   "list values as KEY=[2],[2,3]); members share the stages they have in common.")
@config_overrides
def run(config_file: Path, stages: str, force: str, list_only: bool, devices: int | None, sweeps: tuple[str, ...],
        overrides: tuple[str, ...]) -> None:
    """Run the experiment's stages in-process; finished stages are skipped, an
    interrupted stage resumes from its last checkpoint. With --sweep, every grid point
    reports into runs/<name>-<label>/ (the labels of `mkd submit --sweep`), tagged with
    the config's group (default: its name) for `mkd results`."""
    from mkdcore.sweep import load_members, member_config

    if devices is not None:
        overrides = (*overrides, f"runtime.devices={devices}")
    members = load_members(config_file, list(overrides), list(sweeps))
    group = (members[0].cfg.group or members[0].cfg.name) if sweeps else None
    for i, member in enumerate(members, 1):
        if member.label:
            click.echo(f"[sweep] {member.cfg.name}[{member.label}] ({i}/{len(members)}) -> "
                       f"{Path(member.cfg.runtime.runs_dir) / member.run_name}", err=True)
        _run_one(member_config(member, group), config_file, stages, force, list_only)
    if group is not None and not list_only:
        click.echo(f"compare: mkd results {members[0].cfg.runtime.runs_dir} --group {group}", err=True)


def _run_one(cfg: ExperimentConfig, config_file: Path, stages: str, force: str, list_only: bool) -> None:
    """One experiment: list its DAG, or run it and print its table."""
    from mkdcore.errors import Terminated  # not via mkdcore.engine: `--list` needs no torch
    from mkdcore.stages.dag import plan
    from mkdcore.stages.runner import run_experiment

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
        click.echo(f"stopped: {exc}; the same command resumes from it", err=True)
        raise SystemExit(exc.exit_code)
    results = Path(cfg.runtime.runs_dir) / cfg.name / "results.json"
    if "report" not in ran and nodes["report"].freshness(nodes) and results.is_file():
        from mkdcore.report import load_results, print_table, rows_of

        finished = load_results(results, f"rewrite it with `mkd run {config_file} --force report`")
        print_table(rows_of(finished), f"{cfg.name} (finished earlier)")
        click.echo(f"report: {results.parent / 'report.md'}")
