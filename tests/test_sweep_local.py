"""``mkd run CONFIG --sweep``: the grid of ``mkd submit --sweep`` run in-process, labels
that tell members apart, list values, and a 3-seed smoke sweep pooled by `mkd results`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from mkdcore.errors import ConfigError
from mkdcore.sweep import load_members, split_values, sweep_grid
from mkdcore.testing import run_cli


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: exp\nmodalities: {{names: [rgb]}}\nruntime: {{runs_dir: {tmp_path / 'runs'}}}\n")
    return path


def test_list_values_split_on_top_level_commas_only():
    assert split_values("[2],[2,3]", "x") == ["[2]", "[2,3]"]
    assert split_values("{a: 1, b: 2},'x,y',3", "x") == ["{a: 1, b: 2}", "'x,y'", "3"]
    assert sweep_grid(["student.head.options.temporal_set=[2],[2,3]"]) == [
        ["student.head.options.temporal_set=[2]"], ["student.head.options.temporal_set=[2,3]"]]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_values("[2,3", "--sweep x")


def test_list_values_reach_the_member_configs(cfg):
    members = load_members(cfg, [], ["training.schedule.milestones=[2],[2,3]"], check_plugins=False)
    assert [m.cfg.training.schedule.milestones for m in members] == [[2], [2, 3]]
    assert [m.label for m in members] == ["milestones=[2]", "milestones=[2,3]"]
    assert len({m.run_name for m in members}) == 2


def test_labels_tell_keys_with_the_same_last_part_apart(cfg):
    members = load_members(cfg, [], ["training.seed=0,1", "evaluation.seed=0,1"], check_plugins=False)
    labels = [m.label for m in members]
    assert labels == ["training.seed=0,evaluation.seed=0", "training.seed=0,evaluation.seed=1",
                      "training.seed=1,evaluation.seed=0", "training.seed=1,evaluation.seed=1"]
    assert len({m.run_name for m in members}) == 4
    # values that sanitise to the same folder name still get their own folders
    members = load_members(cfg, [], ["data.split=a/b,a_b"], check_plugins=False)
    assert members[0].run_name != members[1].run_name
    with pytest.raises(ConfigError, match="listed twice"):
        load_members(cfg, [], ["training.seed=0,0"], check_plugins=False)


def test_run_list_shows_every_member_as_submit_names_it(cfg, tmp_path):
    from mkdcore.jobs.submit import build_job

    code, out, err = run_cli("run", cfg, "--sweep", "training.seed=0,1", "--list")
    assert code == 0, err
    assert "[sweep] exp[seed=0] (1/2)" in err and "[sweep] exp[seed=1] (2/2)" in err
    assert str(tmp_path / "runs" / "exp-seed_1") in err
    jobs = [build_job(m, name=None, group="g", priority=5, queue="mkd", code=None, grace_s=1, max_attempts=1)[0]
            for m in load_members(cfg, [], ["training.seed=0,1"], check_plugins=False)]
    assert [j.name for j in jobs] == ["exp[seed=0]", "exp[seed=1]"]


@pytest.mark.slow
def test_three_seed_smoke_sweep_is_one_row_per_model_with_mean_and_std(smoke_template):
    """The issue's acceptance: a 3-seed local sweep of smoke, pooled by `mkd results`.
    Teachers and the MFM come from the session's finished smoke run (shared stages);
    each seed trains its students (4 tasks), evaluates (20 episodes) and reports."""
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    code, out, err = run_cli("run", ws.cfg, "--sweep", "training.seed=0,1,2")
    assert code == 0, err
    assert "[run ] teacher:" not in err and "[run ] fuse" not in err  # the teachers were shared, not retrained
    assert err.count("[run ] student:lite-mkd") == 2  # seed 0 is the template's own student
    assert "compare: mkd results" in err
    results = [json.loads((ws.runs / f"smoke-seed_{s}" / "results.json").read_text())["models"] for s in range(3)]
    code, out, err = run_cli("results", ws.runs, "--group", "smoke", "--students-only", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["model"] for r in rows) == ["student:baseline", "student:lite-mkd"]  # one row per model
    for row in rows:
        accs = [m[row["model"]]["accuracy"] for m in results]
        assert row["n"] == 3 and row["setting"] == {} and row["runs"] == [f"smoke-seed_{s}" for s in range(3)]
        assert row["accuracy"] == pytest.approx(statistics.mean(accs)) and row["std"] == pytest.approx(statistics.stdev(accs))
    code, out, _ = run_cli("results", ws.runs, "--group", "smoke", "--students-only")
    lines = [ln for ln in out.splitlines() if ln.startswith("student:lite-mkd")]
    accs = [m["student:lite-mkd"]["accuracy"] for m in results]
    assert len(lines) == 1 and f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" in lines[0]
    print(out)
