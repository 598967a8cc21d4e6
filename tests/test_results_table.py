"""`mkd results` as a comparison: differing config columns, mean ± std over seeds,
md/csv/json, 80 columns without cut numbers, no files unless --plot. Runs are written
by hand (results.json + the config.yaml the report stage writes), so this is fast."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import yaml

from mkdcore.testing import run_cli


def _run(runs: Path, name: str, group: str | None, acc: float, **config: object) -> None:
    """A finished experiment ``runs/<name>/`` with one student and one teacher."""
    d = runs / name
    d.mkdir(parents=True)
    cfg = {"name": name, "group": group, "training": {"lr": 0.001, "seed": 0}, "evaluation": {"seed": 0},
           "runtime": {"runs_dir": str(runs), "device": "cpu"}}
    for key, value in config.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    model = {"episodes": 20, "ci95": 1.5, "params": 22_700_000, "gmacs": 454.01}
    (d / "results.json").write_text(json.dumps({
        "experiment": name, "group": group, "dataset": {"split": "synth"},
        "setting": {"way": 5, "shot": 5, "episodes": 20},
        "models": {"student:lite-mkd": {**model, "role": "student", "accuracy": acc, "distiller": "d2m"},
                   "teacher:rgb": {**model, "role": "teacher", "accuracy": 50.0}},
        "report_stage": str(d / "no-such-stage"),
    }))


def test_seeds_pool_into_one_row_with_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    accs = [20.0, 22.5, 26.0]
    for seed, acc in enumerate(accs):
        _run(runs, f"exp-seed_{seed}", "exp", acc, training__seed=seed)
    code, out, err = run_cli("results", runs, "--group", "exp", "--format", "json", "--students-only")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["n"] == 3 and row["setting"] == {}
    assert row["accuracy"] == pytest.approx(statistics.mean(accs)) and row["std"] == pytest.approx(statistics.stdev(accs))
    code, out, _ = run_cli("results", runs)
    assert f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" in out and "mean ± std" in out
    assert "seed" not in out.split("\n\n")[1]  # the seed column is pooled away


def test_only_differing_keys_become_columns_named_unambiguously(tmp_path):
    runs = tmp_path / "runs"
    for i, (lr, tseed) in enumerate([(0.1, 0), (0.1, 1), (0.01, 0), (0.01, 1)]):
        _run(runs, f"g-{i}", "g", 30.0 + i, training__lr=lr, training__seed=tseed, teacher__training__lr=lr)
    code, out, _ = run_cli("results", runs, "--format", "csv", "--students-only")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    # training.lr and teacher.training.lr differ, seeds pool: two rows of two runs each
    assert [(r["training.lr"], r["teacher.training.lr"], r["n"]) for r in rows] == [("0.01", "0.01", "2"), ("0.1", "0.1", "2")]
    assert "evaluation.seed" not in rows[0] and "runtime.device" not in rows[0]
    code, out, _ = run_cli("results", runs, "--format", "md", "--students-only")
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert set(header.split(" | ")[1:3]) == {"training.lr", "teacher.training.lr"}  # `lr` alone would be ambiguous


def test_table_fits_80_columns_and_never_cuts_a_number(tmp_path):
    runs = tmp_path / "runs"
    long = "a-very-long-backbone-name-that-would-never-fit-in-eighty-columns-at-all"
    for i in range(2):
        _run(runs, f"w-{i}", "w", 12.345 + i, student__backbone__name=f"{long}-{i}",
             data__root=f"/some/deep/dataset/folder/number/{i}")
    code, out, _ = run_cli("results", runs)
    assert code == 0
    assert max(len(line) for line in out.splitlines() if not line.startswith("stale")) <= 80
    assert "12.35 ± 1.50" in out and "13.35 ± 1.50" in out  # whole, while the long names are shortened
    assert "a-very-lon…s-at-all-0" in out and "a-very-lon…s-at-all-1" in out  # cut in the middle: still told apart


def test_plot_is_written_only_when_asked(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "p", None, 40.0)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert run_cli("results", runs)[0] == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    plot = tmp_path / "acc.png"
    assert run_cli("results", runs, "--plot", plot)[0] == 0 and plot.stat().st_size > 1000
