"""Comparable results: what ``mkd results`` shows for a group of runs.

Researchers compare runs that differ in a few settings. For each group (``mkd submit
--sweep`` or ``mkd run --sweep`` members; ungrouped experiments form one table), the
table shows only the config keys whose values differ between its runs, named by the
shortest dotted suffix that tells them apart. Runs that differ only by seeds (any key
named ``seed``) collapse into one row per model: mean ± sample std of accuracy over the
n runs. A row of one run shows its ± 95% interval over test episodes instead.

The plain-text table fits a terminal width (80 columns by default) without ever cutting
a number: the cost columns go first, then long config values are shortened.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkdcore.sweep import short_keys

#: config keys that never tell results apart (names, where things go, logging)
IGNORED = ("name", "group", "runtime.", "logging.", "data.num_workers", "evaluation.batch_frames")


@dataclass
class Run:
    """One experiment's results.json rows (one per model) and its flattened config."""

    experiment: str
    group: str | None
    config: dict[str, str]
    rows: list[dict[str, Any]]


@dataclass
class Row:
    """One line of a group's table: a model under one setting, over ``len(runs)`` runs."""

    group: str | None
    model: str
    role: str
    setting: dict[str, str]  # the differing (non-seed) keys -> value
    runs: list[str]
    accuracy: float
    spread: float  # std over runs when n > 1, else the 95% interval over episodes
    params: int | None
    gmacs: float | None
    stale: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "model": self.model, "role": self.role, "setting": self.setting,
                "runs": self.runs, "n": self.n, "accuracy": self.accuracy,
                "std" if self.n > 1 else "ci95": self.spread, "params": self.params, "gmacs": self.gmacs,
                "stale": self.stale or None}


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and scalars as compact JSON text."""
    if isinstance(node, dict) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = node if isinstance(node, str) else json.dumps(node, separators=(",", ":"))
    return {prefix[:-1]: text}


def _is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def _ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def differing(runs: list[Run]) -> list[str]:
    """Config keys (in config order) whose values are not the same in every run."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    return [k for k in keys if not _ignored(k) and len({r.config.get(k) for r in runs}) > 1]


def group_rows(runs: list[Run]) -> list[Row]:
    """The table of one group: runs equal but for seeds pooled into one row per model."""
    keys = [k for k in differing(runs) if not _is_seed(k)]
    pooled: dict[tuple[str, tuple[str | None, ...]], list[tuple[Run, dict[str, Any]]]] = {}
    for run in runs:
        setting = tuple(run.config.get(k) for k in keys)
        for row in run.rows:
            pooled.setdefault((row["model"], setting), []).append((run, row))
    out = []
    for (model, setting), members in pooled.items():
        accs = [row["accuracy"] for _, row in members]
        mean = sum(accs) / len(accs)
        if len(accs) > 1:
            spread = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
        else:
            spread = members[0][1]["ci95"]
        first = members[0][1]
        out.append(Row(group=runs[0].group, model=model, role=first["role"],
                       setting={k: v for k, v in zip(keys, setting) if v is not None},
                       runs=[r.experiment for r, _ in members], accuracy=mean, spread=spread,
                       params=first.get("params"), gmacs=first.get("gmacs"),
                       stale=sorted({f"{r.experiment}: {row['stale']}" for r, row in members if row.get("stale")})))
    role_order = {"teacher": 0, "student": 1}
    return sorted(out, key=lambda r: (tuple(r.setting.get(k, "") for k in keys), role_order.get(r.role, 9), r.model))


def by_group(runs: Iterable[Run]) -> dict[str | None, list[Run]]:
    groups: dict[str | None, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.group or "", r.experiment)):
        groups.setdefault(run.group, []).append(run)
    return groups


# ---------------------------------------------------------------------- rendering
def _columns(rows: list[Row]) -> list[tuple[str, str]]:
    """(key, header) of a group's table: model, the differing keys, accuracy, n, cost."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.setting))
    short = short_keys(list(keys))
    cols = [("model", "model")] + [(f"setting.{k}", short[k]) for k in keys]
    cols += [("acc", "acc %"), ("n", "n"), ("params", "params"), ("gmacs", "GMACs")]
    if len({tuple(r.runs) for r in rows}) > 1 and not keys:
        cols.insert(1, ("run", "run"))  # ungrouped runs that differ in nothing shown: name them
    return cols


def _cells(row: Row) -> dict[str, str]:
    from mkdcore.report import fmt_gmacs, fmt_params

    cells = {f"setting.{k}": v for k, v in row.setting.items()}
    cells.update(model=row.model, run=row.runs[0] if row.n == 1 else f"{row.runs[0]} +{row.n - 1}",
                 acc=f"{row.accuracy:.2f} ± {row.spread:.2f}" + ("*" if row.stale else ""), n=str(row.n),
                 params=fmt_params(row.params).replace(" ", ""), gmacs=fmt_gmacs(row.gmacs))
    return cells


#: columns whose cells are numbers: never shortened (dropped whole when they do not fit)
NUMERIC = ("acc", "n", "params", "gmacs")
DROPPABLE = ("gmacs", "params")  # in this order, when the table is too wide


def text_table(rows: list[Row], width: int = 80) -> str:
    """Aligned plain text within ``width`` columns; numbers are never cut."""
    cols = _columns(rows)
    cells = [_cells(r) for r in rows]

    def widths(cols: list[tuple[str, str]]) -> dict[str, int]:
        return {k: max([len(h)] + [len(c.get(k, "-")) for c in cells]) for k, h in cols}

    def total(w: dict[str, int]) -> int:
        return sum(w.values()) + 2 * (len(w) - 1)

    w = widths(cols)
    for key in DROPPABLE:
        if total(w) <= width:
            break
        cols = [c for c in cols if c[0] != key]
        w = widths(cols)
    while total(w) > width:  # shorten the widest text column by one, down to 8 characters
        text = [k for k, _ in cols if k not in NUMERIC and w[k] > 8]
        if not text:
            break
        w[max(text, key=lambda k: w[k])] -= 1

    def fit(s: str, n: int) -> str:
        """Cut in the middle: values of one column often differ only at their end."""
        if len(s) <= n:
            return s
        head = (n - 1) // 2
        return s[:head] + "…" + s[len(s) - (n - 1 - head):]

    def line(values: dict[str, str]) -> str:
        parts = []
        for k, _ in cols:
            v = fit(values.get(k, "-"), w[k])
            parts.append(v.rjust(w[k]) if k in NUMERIC else v.ljust(w[k]))
        return "  ".join(parts).rstrip()

    head = line({k: h for k, h in cols})
    return "\n".join([head, "-" * min(width, len(head)), *(line(c) for c in cells)])


def markdown(rows: list[Row]) -> str:
    cols = _columns(rows)
    cells = [_cells(r) for r in rows]
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---:" if k in NUMERIC else "---" for k, _ in cols) + "|"]
    out += ["| " + " | ".join(c.get(k, "-").replace("|", "\\|") for k, _ in cols) + " |" for c in cells]
    return "\n".join(out)


def csv_text(rows: list[Row]) -> str:
    """Every group in one CSV: full config keys as columns, raw numbers."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.setting))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "model", "role", *keys, "n", "accuracy", "std", "ci95", "params", "gmacs", "runs", "stale"])
    for r in rows:
        writer.writerow([r.group or "", r.model, r.role, *(r.setting.get(k, "") for k in keys), r.n, r.accuracy,
                         r.spread if r.n > 1 else "", r.spread if r.n == 1 else "", r.params, r.gmacs,
                         " ".join(r.runs), "; ".join(r.stale)])
    return buf.getvalue()


def caption(rows: list[Row]) -> str:
    notes = []
    if any(r.n > 1 for r in rows):
        notes.append("n > 1: mean ± std over runs that differ only by seed")
    if any(r.n == 1 for r in rows):
        notes.append("n = 1: ± 95% CI over test episodes")
    return "; ".join(notes)


def load_run(path: Path, res: dict[str, Any], rows: list[dict[str, Any]]) -> Run:
    """A run from its results.json and the resolved ``config.yaml`` the report wrote beside it."""
    import yaml

    from mkdcore.fileio import read_text

    config_file = path.parent / "config.yaml"
    config: dict[str, str] = {}
    if config_file.is_file():
        try:
            data = yaml.safe_load(read_text(config_file, "experiment config copy", "rewrite it with `mkd run CONFIG --force report`"))
        except yaml.YAMLError:
            data = None  # a damaged copy only costs the config columns of this run
        config = flatten(data) if isinstance(data, dict) else {}
    return Run(experiment=res["experiment"], group=res.get("group"), config=config, rows=rows)
