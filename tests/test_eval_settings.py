"""`mkd eval` scores with the autocast and decode settings the evaluate stage used (the
model card records them), so a frozen-episode evaluation reproduces the stage's numbers
on the same machine; ``--amp``/``--decode`` override them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mkdcore.testing import run_cli


@pytest.fixture
def student(smoke_template: Path, tmp_path: Path) -> Path:
    """A copy of the template's Lite-MKD student model folder (the template stays read-only)."""
    stages = json.loads((smoke_template / "stages.json").read_text())
    model = tmp_path / "model"
    shutil.copytree(smoke_template / stages["student:lite-mkd"] / "model", model)
    return model


def _spy(monkeypatch) -> list[dict]:
    import mkdcore.stages.scoring as scoring

    calls: list[dict] = []
    real = scoring.score_on_frames

    def spy(*args, **kwargs):
        calls.append({"amp": kwargs["amp"], "decode": kwargs["decode"]})
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_on_frames", spy)
    return calls


def _eval(template: Path, model: Path, *extra: str) -> dict:
    code, out, err = run_cli("eval", model, "--episodes", template / "episodes.json", "--root", template / "data" / "smoke",
                             "--device", "cpu", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_the_evaluate_stage_records_its_settings_and_mkd_eval_uses_them(smoke_template, student, monkeypatch, capsys):
    card = json.loads((student / "model.json").read_text())
    assert card["evaluation"]["amp"] == "auto" and card["evaluation"]["decode"] == "auto"  # configs/smoke.yaml's defaults
    card["evaluation"].update(amp="none", decode="cpu")  # as a config with training.amp: none would have written it
    (student / "model.json").write_text(json.dumps(card))
    calls = _spy(monkeypatch)
    got = _eval(smoke_template, student)
    assert calls == [{"amp": "none", "decode": "cpu"}] and (got["amp"], got["decode"]) == ("none", "cpu")
    got = _eval(smoke_template, student, "--amp", "bf16", "--decode", "auto")  # the flags win
    assert calls[-1] == {"amp": "bf16", "decode": "auto"} and got["amp"] == "bf16"


def test_a_card_without_an_evaluation_evaluates_with_the_config_defaults(smoke_template, student, monkeypatch, capsys):
    card = json.loads((student / "model.json").read_text())
    (student / "model.json").write_text(json.dumps({**card, "evaluation": None}))
    calls = _spy(monkeypatch)
    _eval(smoke_template, student)
    assert calls == [{"amp": "auto", "decode": "auto"}]
