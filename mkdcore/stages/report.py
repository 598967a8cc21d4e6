"""Stage ``report``: ``runs/<experiment>/`` with report.md, results.json, plots, and
the results table printed at the end of ``mkd run``.

Unlike the content-keyed stages, the report belongs to the experiment: it is always
rewritten so it names the stage outputs this experiment used."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mkdcore import names
from mkdcore.fileio import atomic_write_json, atomic_write_text, read_json
from mkdcore.report import (
    MODEL_COLUMNS,
    display_rows,
    markdown_table,
    plot_acc_vs_gmacs,
    plot_accuracy,
    plot_training_curves,
    print_table,
    rows_of,
)
from mkdcore.stages.base import StageContext


def experiment_dir(ctx: StageContext) -> Path:
    """``runs/<name>/``, checked again here: the report is the one stage that writes by a
    user-typed name, and pydantic does not re-validate ``cfg.name = ...`` assigned after
    loading (nor would it see a ``runs/<name>`` symlink leading out of ``runs/``)."""
    runs = Path(ctx.cfg.runtime.runs_dir)
    path = runs / names.experiment_name(ctx.cfg.name)
    names.inside(runs, path, "report directory")
    return path


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    out = experiment_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = read_json(ctx.nodes["evaluate"].files.results, "evaluation results",
                           "run with --force evaluate to redo the evaluation")
    rows = rows_of(evaluation)
    stages = {name: {"kind": n.kind, "key": n.key, "dir": str(n.stage_dir)} for name, n in ctx.nodes.items() if name != "report"}
    curves = {name: n.files.metrics for name, n in ctx.nodes.items() if n.kind in ("teacher", "fuse", "student")}
    title = f"{cfg.name}: {evaluation['setting']['way']}-way {evaluation['setting']['shot']}-shot"
    plots = {
        "training_curves": plot_training_curves(curves, out / "training_curves.png").name,
        "accuracy": plot_accuracy(rows, out / "accuracy.png", title).name,
        "accuracy_vs_gmacs": plot_acc_vs_gmacs(rows, out / "accuracy_vs_gmacs.png", title).name,
    }
    results = {
        "experiment": cfg.name,
        "group": cfg.group,
        "dataset": {"root": str(cfg.data.root), "split": cfg.data.split},
        "student": {"backbone": cfg.student.backbone.model_dump(mode="json"), "head": cfg.student.head.model_dump(mode="json")},
        "setting": evaluation["setting"],
        "models": evaluation["models"],
        "stages": stages,
        # what `mkd results` checks before it shows these numbers as current
        "report_stage": str(ctx.node.stage_dir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(out / "results.json", results, "experiment results")
    atomic_write_text(out / "config.yaml", cfg.to_yaml(), "experiment config copy")
    s = evaluation["setting"]
    lines = [
        f"# {cfg.name}",
        "",
        f"{s['way']}-way {s['shot']}-shot, {s['query']} query per class, {s['episodes']} test episodes "
        f"({s['source']}), {s['frames']} frames at {s['size']} px. Dataset `{cfg.data.root}` split `{cfg.data.split}`.",
        "Accuracy is the mean per-episode accuracy with a 95% interval (1.96 std / sqrt(N)). GMACs are conv+linear "
        "multiply-adds of one test episode (the unit the paper calls GFLOPs); the MFM teacher counts every modality's network.",
        "",
        markdown_table(display_rows(rows), MODEL_COLUMNS),
        "",
        "![training curves](training_curves.png)",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![accuracy vs GMACs](accuracy_vs_gmacs.png)",
        "",
        "## Stages",
        "",
        markdown_table([{"stage": k, "key": v["key"], "dir": v["dir"]} for k, v in stages.items()],
                       [("stage", "stage"), ("key", "key"), ("dir", "output")]),
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines), "report")
    print_table(rows, title)
    print(f"report: {out / 'report.md'}")
    return {"dir": str(out), "plots": plots}
