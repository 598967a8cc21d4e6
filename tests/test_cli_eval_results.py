"""`mkd data episodes`, `mkd eval`, `mkd results` and `mkd run --list / episodes_file`
on a finished smoke experiment (the smoke DAG runs once for the whole module).

Commands go through ``mkdcore.cli.main.main``, the console entry point, so user errors
are checked as users see them: one ``error: ...`` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mkdcore.config import ExperimentConfig, load_config
from mkdcore.data.episodes import load_episodes
from mkdcore.data.loader import EpisodeDataset
from mkdcore.models.folder import load_model
from mkdcore.stages.base import StageNode
from mkdcore.stages.dataset import layout_of, split_of, transform_of
from mkdcore.stages.scoring import score_episodes
from mkdcore.testing import run_cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
N_EPISODES = 20  # = evaluation.episodes of configs/smoke.yaml, so the file can replace the sampler


@dataclass
class Smoke:
    cfg: ExperimentConfig
    data: Path
    runs: Path
    nodes: dict[str, StageNode]
    episodes_file: Path

    @property
    def overrides(self) -> list[str]:
        return ["--set", f"data.root={self.data}", "--set", f"runtime.runs_dir={self.runs}"]


@pytest.fixture(scope="module")
def smoke(smoke_template: Path) -> Smoke:
    """A private copy of the session's finished smoke experiment (tests/conftest.py),
    with the frozen test episodes `mkd data episodes` wrote for it (seed 7)."""
    from mkdcore.stages.dag import plan
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    cfg = load_config(ws.cfg, [])
    return Smoke(cfg, ws.data, ws.runs, {n.name: n for n in plan(cfg)}, ws.episodes)


def one_error_line(result: tuple[int, str, str]) -> str:
    """The message of a failed command, checked to be a single ``error:`` line."""
    code, _, err = result
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_data_episodes_freezes_test_episodes(smoke: Smoke):
    episodes, meta = load_episodes(smoke.episodes_file)
    e = smoke.cfg.episodes
    assert len(episodes) == N_EPISODES
    assert (meta["split"], meta["way"], meta["shot"], meta["query"], meta["seed"]) == ("test", e.way, e.shot, e.query_test, 7)
    test_classes = set(split_of(smoke.cfg, "test").classes)
    for ep in episodes:
        assert len(ep.classes) == e.way and len(ep.support) == e.way * e.shot and len(ep.query) == e.way * e.query_test
        assert not set(ep.support) & set(ep.query)
        assert [ep.classes[y] for y in ep.query_labels] == [k.class_name for k in ep.query]
        assert set(ep.classes) <= test_classes
    # the same seed gives the same file; another seed gives other episodes
    again = smoke.episodes_file.with_name("again.json")
    other = smoke.episodes_file.with_name("other.json")
    common = ["--split", "test", "--n", N_EPISODES, "--way", e.way, "--shot", e.shot, "--query", e.query_test]
    assert run_cli("data", "episodes", smoke.data, *common, "--seed", 7, "--out", again)[0] == 0
    assert run_cli("data", "episodes", smoke.data, *common, "--seed", 8, "--out", other)[0] == 0
    assert load_episodes(again)[0] == episodes
    assert load_episodes(other)[0] != episodes


def _direct_scores(smoke: Smoke, model_dir: Path):
    """The model's full forward (CNN per episode, no feature cache) scored by score_episodes."""
    model, _ = load_model(model_dir, "cpu")
    episodes, _ = load_episodes(smoke.episodes_file)
    ds = EpisodeDataset(layout_of(smoke.cfg), None, episodes, ["rgb"], transform_of(smoke.cfg, train=False),
                        frames=smoke.cfg.data.frames)
    items = iter(ds[i] for i in range(len(ds)))

    def logits(ep):
        item = next(items)
        assert item["query_keys"] == ep.query
        return model(item["support_frames"], item["support_labels"], item["query_frames"])["logits"]

    with torch.no_grad():
        return score_episodes(episodes, logits).summary()


@pytest.mark.slow
def test_eval_student_matches_direct_scoring(smoke: Smoke, capsys):
    stage_dir = smoke.nodes["student:lite-mkd"].stage_dir
    code, out, err = run_cli("eval", stage_dir, "--episodes", smoke.episodes_file, "--device", "cpu", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert {"accuracy", "ci95", "per_class_accuracy", "episodes", "classes"} <= set(got)
    assert got["episodes"] == N_EPISODES and got["episodes_file"] == str(smoke.episodes_file)
    assert 0 <= got["accuracy"] <= 100 and got["ci95"] >= 0
    want = _direct_scores(smoke, stage_dir / "model")
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["ci95"] == pytest.approx(want["ci95"], abs=1e-9)
    assert got["per_class_accuracy"] == pytest.approx(want["per_class_accuracy"], abs=1e-9)
    # the human-readable form says the same
    code, out, _ = run_cli("eval", stage_dir / "model", "--episodes", smoke.episodes_file, "--device", "cpu")
    assert code == 0 and f"{got['accuracy']:.2f} ± {got['ci95']:.2f} %" in out


@pytest.mark.slow
def test_eval_errors_are_one_line(smoke: Smoke, capsys):
    data_dir = smoke.nodes["data"].stage_dir
    line = one_error_line(run_cli("eval", data_dir, "--episodes", smoke.episodes_file))
    assert str(data_dir) in line and "model.json" in line
    # the MFM teacher reads stored fused features: refused, with a pointer to the evaluate stage
    line = one_error_line(run_cli("eval", smoke.nodes["fuse"].stage_dir, "--episodes", smoke.episodes_file))
    assert "fusion_teacher" in line
    missing = smoke.episodes_file.with_name("missing.json")
    line = one_error_line(run_cli("eval", smoke.nodes["student:baseline"].stage_dir, "--episodes", missing))
    assert str(missing) in line


@pytest.mark.slow
def test_results_json_lists_every_model(smoke: Smoke, capsys, monkeypatch):
    code, out, err = run_cli("results", smoke.runs, "--json")
    assert code == 0, err
    rows = [r for r in json.loads(out) if r["experiment"] == "smoke"]
    assert {r["model"] for r in rows} == {"teacher:rgb", "teacher:depth", "teacher:flow", "teacher:mfm",
                                         "student:lite-mkd", "student:baseline"}
    evaluated = json.loads((smoke.nodes["evaluate"].stage_dir / "results.json").read_text())["models"]
    for r in rows:
        m = evaluated[r["model"]]
        assert (r["accuracy"], r["ci95"], r["params"], r["gmacs"]) == (m["accuracy"], m["ci95"], m["params"], m["gmacs"])
        assert r["params"] > 0 and r["gmacs"] > 0 and r["shots"] == smoke.cfg.episodes.shot
    by_model = {r["model"]: r for r in rows}
    assert by_model["student:lite-mkd"]["distiller"] == "d2m" and by_model["student:baseline"]["distiller"] == "ce"
    # the table form prints every model and writes the accuracy-vs-GMACs plot
    plot = smoke.runs / "plot.png"
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps cells at the default 80 columns
    code, out, _ = run_cli("results", smoke.runs, "--plot", plot)
    assert code == 0 and "student:lite-mkd" in out and "teacher:mfm" in out
    assert plot.stat().st_size > 1000


@pytest.mark.slow
def test_results_missing_dir_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    line = one_error_line(run_cli("results", missing))
    assert str(missing) in line


@pytest.mark.slow
def test_run_list_shows_every_stage_done(smoke: Smoke, capsys):
    code, out, err = run_cli("run", SMOKE, "--list", *smoke.overrides)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split()[1] for line in lines] == list(smoke.nodes)
    assert all(line.split()[0] == "done" for line in lines), out


@pytest.mark.slow
def test_run_with_episodes_file_evaluates_on_it(smoke: Smoke, capsys):
    args = ["run", SMOKE, *smoke.overrides, "--set", "name=smoke-frozen", "--set", f"evaluation.episodes_file={smoke.episodes_file}"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    # only evaluation and the report are new: every trained stage is shared
    assert "[run ] evaluate" in err and "[run ] report" in err
    assert "[run ] student" not in err and "[run ] teacher" not in err
    results = json.loads((smoke.runs / "smoke-frozen" / "results.json").read_text())
    assert results["setting"]["source"] == str(smoke.episodes_file)
    assert results["setting"]["episodes"] == N_EPISODES and results["setting"]["seed"] == 7
    # the evaluate stage and `mkd eval` agree on the same frozen episodes, for students and
    # for per-modality teachers (which the stage scores from their stored features)
    for name in ("student:lite-mkd", "student:baseline", "teacher:rgb", "teacher:flow"):
        code, out, err = run_cli("eval", smoke.nodes[name].stage_dir, "--episodes", smoke.episodes_file, "--device", "cpu", "--json")
        assert code == 0, err
        assert json.loads(out)["accuracy"] == pytest.approx(results["models"][name]["accuracy"], abs=1e-9), name


def test_results_on_a_foreign_results_file_is_one_line(tmp_path, capsys):
    from mkdcore.cli.main import main

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text('{"something": "else"}')
    with pytest.raises(SystemExit) as exc:
        main(["results", str(tmp_path)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an mkd results file" in err and err.count("\n") == 1
