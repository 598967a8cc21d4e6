"""Provenance: no stale or failed output is ever reused (issue 10, "Caches that cannot go stale").

Each test here failed on the code before provenance: a redone stage left its readers
"done", a failed derive was cached, derived frames ignored their options, and a run
killed before its first checkpoint logged its first tasks twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mkdcore.config import load_config
from mkdcore.data.derive import STAMP, derive_dataset, read_stamp
from mkdcore.data.synth import render_dataset
from mkdcore.engine import EpisodicTrainer
from mkdcore.errors import DataError, MkdError
from mkdcore.stages import runner as runner_module
from mkdcore.stages.dag import plan
from mkdcore.stages.runner import run_experiment
from tests.faults.workspace import Workspace, fresh
from tests.test_engine import cfg as train_cfg
from tests.test_engine import make_problem, read_metrics


def nodes_of(ws: Workspace):
    c = load_config(ws.cfg, [])
    return c, {n.name: n for n in plan(c)}


@pytest.fixture
def ws(smoke_template: Path) -> Workspace:
    return fresh(smoke_template)


# ---------------------------------------------------------------- stale readers
def test_forcing_one_stage_makes_every_reader_stale_until_redone(ws, capsys):
    from mkdcore.cli.main import main

    c, nodes = nodes_of(ws)
    assert all(n.freshness(nodes) for n in nodes.values())
    results = ws.runs / c.name / "results.json"
    before = results.read_text()
    run_experiment(c, stages=["student:baseline"], force=["student:baseline"], echo=lambda m: None)
    c, nodes = nodes_of(ws)
    assert nodes["student:baseline"].freshness(nodes)
    ev = nodes["evaluate"].freshness(nodes)
    assert not ev and ev.reason == "upstream student:baseline changed"
    assert not nodes["report"].freshness(nodes)
    assert nodes["student:lite-mkd"].freshness(nodes)  # not a reader of the baseline

    with pytest.raises(SystemExit) as exc:
        main(["run", str(ws.cfg), "--list"])
    assert exc.value.code in (0, None)
    listing = capsys.readouterr().out
    assert "todo  evaluate" in listing and "(upstream student:baseline changed)" in listing

    from mkdcore.testing import run_cli

    code, out, _ = run_cli("results", ws.runs, "--json")  # the old numbers are shown as stale
    assert code == 0 and {r["stale"] for r in json.loads(out)} == {"upstream evaluate is stale: upstream student:baseline changed"}

    _, ran = run_experiment(c, echo=lambda m: None)
    assert ran == ["evaluate", "report"]
    assert json.loads(results.read_text())["models"].keys() == json.loads(before)["models"].keys()
    code, out, _ = run_cli("results", ws.runs, "--json")
    assert code == 0 and {r["stale"] for r in json.loads(out)} == {None}


def test_a_changed_dataset_makes_data_and_everything_after_it_stale(ws):
    c, nodes = nodes_of(ws)
    video = next(p for p in (ws.data / "rgb_l8").iterdir() if p.is_dir())
    (video / "v_new_g01_c01").mkdir()  # a video added to a class folder
    f = nodes["data"].freshness(nodes)
    assert not f and "dataset" in f.reason
    assert "upstream data is stale" in nodes["teacher:rgb"].freshness(nodes).reason


def test_code_version_change_is_not_reused(ws, monkeypatch):
    c, nodes = nodes_of(ws)
    import mkdcore

    monkeypatch.setattr(mkdcore, "__version__", "999.0")
    f = nodes["data"].freshness(nodes)
    assert not f and "mkd version changed" in f.reason


def test_an_interrupted_stage_resumes_only_from_the_same_inputs(ws):
    """A checkpoint trained on an older teacher's features is not resumed."""
    c, nodes = nodes_of(ws)
    student = nodes["student:lite-mkd"]
    started = json.loads((student.stage_dir / "started.json").read_text())["inputs"]
    assert runner_module.resumable(student, started) is False  # a manifest is there: finished, not interrupted
    (student.stage_dir / "manifest.json").unlink()
    assert runner_module.resumable(student, started)
    changed = {**started, "mm_features": {**started["mm_features"], "id": "another-result"}}
    assert not runner_module.resumable(student, changed)


# ---------------------------------------------------------------- failures are never cached
STAGES = ["data", "derive:flow", "teacher:rgb", "features:rgb", "fuse", "mm_features", "student:baseline",
          "evaluate", "report"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_failing_stage_leaves_no_manifest_and_the_next_run_redoes_it(ws, monkeypatch, stage):
    c, nodes = nodes_of(ws)
    node = nodes[stage]
    real_stage_function = runner_module.stage_function

    def patched(kind):
        fn = real_stage_function(kind)
        if kind != node.kind:
            return fn

        def fails_after_working(ctx):
            fn(ctx)  # the stage did its work, then something failed before it returned
            raise MkdError(f"{stage}: injected failure")

        return fails_after_working

    monkeypatch.setattr(runner_module, "stage_function", patched)
    with pytest.raises(MkdError, match="injected failure"):
        run_experiment(c, stages=[stage], force=[stage], echo=lambda m: None)
    assert not node.manifest_path.exists()
    assert not node.freshness(nodes)
    monkeypatch.undo()
    _, ran = run_experiment(c, stages=[stage], echo=lambda m: None)
    assert stage in ran and node.freshness(nodes)
    # the stage was redone: every stage that read it (directly or not) must be redone too
    readers = runner_module.forced_closure(list(nodes.values()), [stage]) - {stage}
    assert readers == {n for n in readers if not nodes[n].freshness(nodes)}
    if stage != "report":
        assert readers, "every stage but the report has readers"


# ---------------------------------------------------------------- derive
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("derive") / "tiny"
    render_dataset(root, classes=3, videos_per_class=2, size=32, seed=0, frames=4)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "d"
    shutil.copytree(root, dst)
    return dst


def _images(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*.jpg"))}


def test_derived_frames_are_tied_to_their_options(tiny_root, tmp_path, plugin_manager):
    root = _copy(tiny_root, tmp_path)
    first = derive_dataset(root, "flow", {"method": "dis"}, progress=False)
    assert first.derived == 6 and first.run and not first.failures
    out = first.out_dir
    stamp = read_stamp(out)
    assert stamp["complete"] and stamp["options"]["method"] == "dis"
    dis_images = _images(out)

    again = derive_dataset(root, "flow", {"method": "dis"}, progress=False)
    assert (again.derived, again.skipped) == (0, 6)  # same options: finished videos are kept

    other = derive_dataset(root, "flow", {"method": "farneback"}, progress=False)
    assert (other.derived, other.skipped) == (6, 0) and "options changed" in other.replaced
    assert read_stamp(out)["options"]["method"] == "farneback"
    assert _images(out) != dis_images

    forced = derive_dataset(root, "flow", {"method": "farneback"}, progress=False, force=True)
    assert (forced.derived, forced.skipped) == (6, 0) and forced.run != other.run


def test_unstamped_output_is_moved_aside_not_reused(tiny_root, tmp_path, plugin_manager):
    root = _copy(tiny_root, tmp_path)
    first = derive_dataset(root, "flow", {"method": "dis"}, progress=False)
    (first.out_dir / STAMP).unlink()  # made by someone else, options unknown
    again = derive_dataset(root, "flow", {"method": "dis"}, progress=False)
    assert again.derived == 6 and "moved aside" in again.replaced
    assert list(root.glob("flow_l8.unstamped-*"))


def test_existing_backend_refuses_frames_a_method_derived(tiny_root, tmp_path, plugin_manager):
    root = _copy(tiny_root, tmp_path)
    ok = derive_dataset(root, "depth", {"backend": "existing"}, progress=False)  # the renderer's ground truth
    assert ok.verified == 6 and not ok.failures
    stamp = read_stamp(ok.out_dir)
    stamp.update(options={"backend": "hf", "model": "x"}, digest="made-by-a-model")
    (ok.out_dir / STAMP).write_text(json.dumps(stamp))
    with pytest.raises(DataError, match="not existing ground truth"):
        derive_dataset(root, "depth", {"backend": "existing"}, progress=False)


def test_a_derive_with_failed_videos_is_not_cached(tmp_path, plugin_manager):
    """The derive stage read ``summary.failed`` (no such field): failures were cached as done."""
    root = tmp_path / "data"
    smoke = yaml.safe_load((Path(__file__).parents[1] / "configs" / "smoke.yaml").read_text())
    smoke["data"]["root"] = str(root)
    smoke["runtime"]["runs_dir"] = str(tmp_path / "runs")
    cfg_file = tmp_path / "smoke.yaml"
    cfg_file.write_text(yaml.safe_dump(smoke))
    c = load_config(cfg_file, [])
    run_experiment(c, stages=["data"], echo=lambda m: None)
    victim = sorted((root / "rgb_l8").iterdir())[0]
    victim = sorted(victim.iterdir())[0]
    frame = sorted(victim.iterdir())[1]
    saved = frame.read_bytes()
    frame.write_bytes(b"not a jpeg")
    node = next(n for n in plan(c) if n.name == "derive:flow")
    nodes = {n.name: n for n in plan(c)}
    with pytest.raises(DataError, match="1 of 48 videos failed"):
        run_experiment(c, stages=["derive:flow"], echo=lambda m: None)
    assert not node.manifest_path.exists()
    frame.write_bytes(saved)
    _, ran = run_experiment(c, stages=["derive:flow"], echo=lambda m: None)
    assert "derive:flow" in ran and node.freshness(nodes)


def test_rederiving_with_other_options_makes_the_stage_and_its_teacher_stale(ws, plugin_manager):
    c, nodes = nodes_of(ws)
    assert nodes["derive:flow"].freshness(nodes) and nodes["teacher:flow"].freshness(nodes)
    derive_dataset(ws.data, "flow", {"method": "farneback"}, progress=False)  # another experiment, same root
    f = nodes["derive:flow"].freshness(nodes)
    assert not f and "derived again" in f.reason
    assert not nodes["teacher:flow"].freshness(nodes)
    assert nodes["teacher:rgb"].freshness(nodes)
    # running the experiment again re-derives with its own options (dis)
    _, ran = run_experiment(c, stages=["derive:flow"], echo=lambda m: None)
    assert ran == ["derive:flow"] and read_stamp(ws.data / "flow_l8")["options"]["method"] == "dis"


# ---------------------------------------------------------------- metrics
def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_anew(tmp_path):
    model, step_fn = make_problem()
    stage = tmp_path / "s"
    (stage / "checkpoints").mkdir(parents=True)
    # what a run killed at task 5 (checkpoint_every 8) leaves: metrics, no last.pt
    (stage / "metrics.jsonl").write_text("".join(json.dumps({"task": t, "loss": 1.0}) + "\n" for t in (2, 4)))
    torch.save({"task": 4, "model": model.state_dict(), "val_acc": 0.9}, stage / "checkpoints" / "best.pt")
    EpisodicTrainer(model, train_cfg(), stage, torch.device("cpu"), step_fn, lambda m: 0.5).train()
    tasks = [r["task"] for r in read_metrics(stage / "metrics.jsonl") if "loss" in r]
    assert tasks == sorted(set(tasks)) and tasks[0] == 2 and tasks.count(2) == 1
    assert torch.load(stage / "checkpoints" / "best.pt", weights_only=True)["task"] != 4


def test_provenance_decides_without_torch():
    """The queue's dispatcher (in the worker parent, which never imports torch) uses it."""
    import subprocess
    import sys

    code = ("import sys, mkdcore.stages.provenance as p, mkdcore.jobs.dispatch; from pathlib import Path; "
            "assert p.check(Path('/nonexistent/x/y')).reason == 'not run yet'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
