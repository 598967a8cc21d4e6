"""Config inheritance (``base:``): the merge rules, origins, one-line errors, and the
paper configs as small deltas that resolve exactly as the flat files they replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mkdcore.config import ExperimentConfig, load_config
from mkdcore.errors import ConfigError
from mkdcore.testing import run_cli

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
#: every paper config's resolved config, dumped from the flat files before they became deltas
FIXTURE = ROOT / "tests" / "fixtures" / "paper_configs_resolved.json"


def _same(new: Any, old: Any, default: Any, path: str) -> list[str]:
    """Where ``new`` differs from ``old``; a key absent from ``old`` (a section added to the
    config after the fixture was dumped) must hold today's default."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = [f"{path}.{k}: missing" for k in old if k not in new]
        for k, v in new.items():
            d = default.get(k) if isinstance(default, dict) else None
            out += _same(v, old[k], d, f"{path}.{k}") if k in old else ([] if v == d else [f"{path}.{k}: {v!r} (not the default)"])
        return out
    return [] if new == old else [f"{path}: {new!r} != {old!r}"]


def test_every_paper_config_resolves_as_the_flat_file_did():
    before = json.loads(FIXTURE.read_text())
    assert sorted(before) == sorted(p.name for p in PAPER.glob("*.yaml"))
    default = ExperimentConfig().model_dump(mode="json")
    for name, old in before.items():
        new = load_config(PAPER / name).model_dump(mode="json")
        assert not _same(new, old, default, name), _same(new, old, default, name)


def test_paper_configs_are_small_deltas_on_a_base():
    for path in PAPER.glob("*.yaml"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert lines[0].startswith("base: ") and len(lines) < 20, path.name


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def test_mappings_merge_lists_replace_and_later_bases_win(tmp_path, monkeypatch):
    _write(tmp_path, {
        "b/a.yaml": "training: {lr: 0.5, tasks: 7, schedule: {milestones: [1, 2, 3]}}\n"
                    "student: {backbone: {name: resnet18, options: {pooling: maxmean, out_dim: 64}}}\n",
        "b/c.yaml": "base: a.yaml\ntraining: {tasks: 9}\n",           # relative to b/, not to the caller
        "b/d.yaml": "training: {lr: 0.25}\n",
        "x.yaml": "base: [b/c.yaml, b/d.yaml]\ntraining: {schedule: {milestones: [5]}}\n"
                  "student: {backbone: {name: resnet50}}\n",
    })
    monkeypatch.chdir(tmp_path)
    cfg = load_config("x.yaml", ["training.tasks=11"], check_plugins=False)
    assert cfg.training.lr == 0.25 and cfg.training.tasks == 11
    assert cfg.training.schedule.milestones == [5]  # a list is replaced whole, never concatenated
    assert cfg.student.backbone.name == "resnet50"
    assert cfg.student.backbone.options == {"pooling": "maxmean", "out_dim": 64}  # options merged
    code, out, err = run_cli("config", "show", "x.yaml", "--origin", "--set", "training.tasks=11")
    assert code == 0, err
    assert "lr: 0.25  # b/d.yaml" in out and "tasks: 11  # --set" in out
    assert "milestones: [5]  # x.yaml" in out and "pooling: maxmean  # b/a.yaml" in out
    assert "momentum: 0.0  # default" in out
    # without --origin: the plain resolved YAML, which loads back to the same config
    code, plain, _ = run_cli("config", "show", "x.yaml")
    assert "base" not in yaml.safe_load(plain) and "#" not in plain
    assert ExperimentConfig.model_validate(yaml.safe_load(plain)).training.lr == 0.25


@pytest.mark.parametrize("files,needle", [
    ({"x.yaml": "base: y.yaml\n", "y.yaml": "base: x.yaml\n"}, "cycle"),
    ({"x.yaml": "base: x.yaml\n"}, "cycle"),
    ({"x.yaml": "base: nowhere.yaml\n"}, "base 'nowhere.yaml' not found"),
    ({"x.yaml": "base: [1]\n"}, "base: expected a file name"),
    ({"x.yaml": "base: y.yaml\n", "y.yaml": "training: [\n"}, "y.yaml: line"),
])
def test_bad_bases_are_one_line_naming_the_files(tmp_path, monkeypatch, files, needle):
    _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config("x.yaml", check_plugins=False)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and msg.startswith(("x.yaml", "y.yaml")), msg
    code, _, err = run_cli("config", "show", "x.yaml")
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err


def test_submitted_jobs_carry_the_resolved_config(tmp_path, monkeypatch):
    """A worker reads the job's stored config.yaml without the base files: it must be flat."""
    from mkdcore.jobs.submit import build_job, load_members

    _write(tmp_path, {"base/b.yaml": "modalities: {names: [rgb]}\ntraining: {lr: 0.125}\n",
                      "x.yaml": f"base: base/b.yaml\nname: x\nruntime: {{runs_dir: {tmp_path / 'runs'}}}\n"})
    monkeypatch.chdir(tmp_path)
    member = load_members("x.yaml", [], ["training.seed=0,1"], check_plugins=False)[1]
    _, resolved = build_job(member, name=None, group="g1", priority=5, queue="mkd", code=None, grace_s=1, max_attempts=1)
    assert "base" not in resolved and resolved["training"]["lr"] == 0.125 and resolved["modalities"]["names"] == ["rgb"]
    assert resolved["training"]["seed"] == 1
