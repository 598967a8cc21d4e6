"""Tables and plots of evaluation results (used by the report stage and `mkd results`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

ROLE_ORDER = {"teacher": 0, "student": 1}

#: what every model entry of a results.json holds (the tables read these)
MODEL_KEYS = ("role", "accuracy", "ci95", "episodes")


def load_results(path: Path, remedy: str) -> dict[str, Any]:
    """An experiment's ``results.json``, checked to hold what the tables read, so that a
    truncated or foreign file is one line naming it and ``remedy`` (not a KeyError)."""
    from mkdcore.fileio import CorruptFileError, read_json

    res = read_json(path, "results file", remedy)
    problem = _results_problem(res)
    if problem:
        raise CorruptFileError(f"results file {path} is not an mkd results file ({problem}); {remedy}")
    return res


def _results_problem(res: dict[str, Any]) -> str | None:
    for key, kind in (("experiment", str), ("dataset", dict), ("setting", dict), ("models", dict)):
        if not isinstance(res.get(key), kind):
            return f"no {key!r} {kind.__name__}"
    for key in ("way", "shot", "episodes"):
        if key not in res["setting"]:
            return f"no setting.{key}"
    if "split" not in res["dataset"]:
        return "no dataset.split"
    for name, m in res["models"].items():
        missing = [k for k in MODEL_KEYS if not isinstance(m, dict) or k not in m]
        if missing:
            return f"model {name!r} has no {', '.join(missing)}"
    return None


def rows_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model of one experiment's results.json, teachers first."""
    rows = []
    for name, r in results["models"].items():
        rows.append({"model": name, "role": r["role"], "accuracy": r["accuracy"], "ci95": r["ci95"],
                     "params": r.get("params"), "gmacs": r.get("gmacs"), "gflops": r.get("gflops"),
                     "distiller": r.get("distiller"), "episodes": r["episodes"]})
    return sorted(rows, key=lambda r: (ROLE_ORDER.get(r["role"], 9), r["model"]))


def fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def fmt_gmacs(g: float | None) -> str:
    return "-" if g is None else f"{g:.2f}"


def markdown_table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    rows = list(rows)
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join("-" if r.get(key) is None else str(r[key]) for key, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "acc": f"{r['accuracy']:.2f} ± {r['ci95']:.2f}", "params_s": fmt_params(r["params"]),
             "gmacs_s": fmt_gmacs(r["gmacs"])} for r in rows]


MODEL_COLUMNS = [("model", "model"), ("role", "role"), ("distiller", "distiller"), ("acc", "acc % ± 95% CI"),
                 ("params_s", "params"), ("gmacs_s", "GMACs")]


def print_table(rows: list[dict[str, Any]], title: str, columns: list[tuple[str, str]] = MODEL_COLUMNS) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption="GMACs: conv+linear multiply-adds (10^9) of one test episode")
    for key, header in columns:
        table.add_column(header, no_wrap=key in ("model", "acc"))  # names and "acc ± ci" stay whole
    for r in display_rows(rows):
        table.add_row(*[str(r.get(k) if r.get(k) is not None else "-") for k, _ in columns])
    Console().print(table)


# --------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4))
    names = [r["model"] for r in rows]
    colors = ["tab:orange" if r["role"] == "teacher" else "tab:blue" for r in rows]
    ax.bar(names, [r["accuracy"] for r in rows], yerr=[r["ci95"] for r in rows], color=colors, capsize=4)
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_acc_vs_gmacs(rows: list[dict[str, Any]], path: Path, title: str, label_key: str = "model") -> Path:
    """The paper's scatter plot: accuracy against per-episode cost (GMACs)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        if r.get("gmacs") is None:
            continue
        ax.errorbar(r["gmacs"], r["accuracy"], yerr=r["ci95"], fmt="o", capsize=3,
                    color="tab:orange" if r.get("role") == "teacher" else "tab:blue")
        ax.annotate(str(r[label_key]), (r["gmacs"], r["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("GMACs per test episode (log scale; the paper's 'GFLOPs')")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _metric_records(metrics: Path) -> list[dict[str, Any]]:
    """The readable lines of a ``metrics.jsonl``: a run killed mid-write can leave a torn
    last line, and a plot of the rest beats no report at all."""
    records = []
    for line in metrics.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("task"), (int, float)):
            records.append(record)
    return records


def plot_training_curves(curves: dict[str, Path], path: Path) -> Path:
    """Loss and validation accuracy over tasks for every training stage."""
    plt = _plt()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for name, metrics in curves.items():
        if not metrics.exists():
            continue
        records = _metric_records(metrics)
        loss = [(r["task"], r["loss"]) for r in records if "loss" in r]
        val = [(r["task"], r["val_acc"] * 100) for r in records if "val_acc" in r]
        if loss:
            ax_loss.plot(*zip(*loss), label=name)
        if val:
            ax_val.plot(*zip(*val), marker="o", label=name)
    ax_loss.set_xlabel("task (episode)")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_val.set_xlabel("task (episode)")
    ax_val.set_ylabel("val accuracy (%)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
