"""Model folders describe themselves: ``model.json`` (card) + ``model.safetensors``, loaded
by ``mkdcore.api.load_model`` with no experiment config; old folders (bare spec +
``model.pt``) still load; a folder mkd cannot load is one line naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mkdcore import __version__, api
from mkdcore.config import Component
from mkdcore.fileio import atomic_torch_save
from mkdcore.models.build import build, fewshot_spec
from mkdcore.models.card import CARD, CARD_FORMAT, LEGACY_WEIGHTS, WEIGHTS
from mkdcore.models.folder import load_model, record_evaluation, save_model
from mkdcore.testing import run_cli

FRAMES, SIZE = 4, 32
DATA = {"root": "data/x", "split": "x", "split_id": "03", "frames": FRAMES, "resize": 40, "crop": SIZE, "normalize": "imagenet"}


def student(out_dim: int = 16) -> tuple[torch.nn.Module, dict]:
    """A tiny two-branch ResNet-18 + TRX student, as the student stage specs it."""
    torch.manual_seed(0)
    spec = fewshot_spec(Component(name="resnet18", options={"projection": "2fc", "out_dim": out_dim}),
                        Component(name="trx", options={"out_dim": 8, "temporal_set": [2]}), FRAMES)
    spec.update(modality="rgb", variant="lite-mkd", data=DATA)
    model, resolved = build(spec)
    return model.eval(), resolved


def episode() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    support = torch.rand(5, FRAMES, 3, SIZE, SIZE, generator=g)
    queries = torch.rand(2, FRAMES, 3, SIZE, SIZE, generator=g)
    return support, torch.tensor([0, 0, 1, 2, 2]), queries  # unequal shots


@torch.no_grad()
def test_round_trip_card_fields_and_equal_outputs(tmp_path, plugin_manager):
    model, spec = student()
    support, labels, queries = episode()
    before = model(support, labels, queries)["logits"]
    card = save_model(tmp_path / "model", model, spec)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CARD, WEIGHTS]

    loaded = api.load_model(tmp_path)  # a stage folder holding model/ works too
    assert loaded.card == json.loads((tmp_path / "model" / CARD).read_text()) == card
    assert card["format"] == CARD_FORMAT and card["spec"]["head"]["options"]["in_dim"] == 16  # widths resolved
    contract = {"modality": "rgb", "frames": FRAMES, "frame_size": SIZE, "resize": 40, "normalize": "imagenet",
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert {k: card["input"][k] for k in contract} == contract
    assert card["features"] == {"dim": 16, "branches": 2, "width": 32, "frames": FRAMES}
    assert card["versions"]["mkd"] == __version__
    assert card["versions"]["components"]["backbone"] == {"name": "resnet18", "package": "lite-mkd", "version": __version__}
    assert card["versions"]["components"]["head"]["name"] == "trx" and card["evaluation"] is None

    after = loaded.model(support, labels, queries)["logits"]
    assert torch.equal(before, after)
    # the deploy split: features once, head per query set, same logits as the whole model
    split = loaded.head(loaded.encode(support), labels, loaded.encode(queries))
    assert loaded.encode(queries).shape == (2, FRAMES, 32)
    assert torch.allclose(split, before, atol=1e-5, rtol=0)


@torch.no_grad()
def test_old_folders_of_spec_and_model_pt_still_load(tmp_path, plugin_manager):
    model, spec = student()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / CARD).write_text(json.dumps(spec))  # what folders held before cards
    atomic_torch_save(folder / LEGACY_WEIGHTS, model.state_dict(), "model weights")
    support, labels, queries = episode()
    loaded, loaded_spec = load_model(folder)
    assert loaded_spec == spec
    assert torch.equal(loaded(support, labels, queries)["logits"], model(support, labels, queries)["logits"])
    assert api.load_model(folder).input["frame_size"] == SIZE


def test_evaluation_is_written_into_the_card(tmp_path, plugin_manager):
    model, spec = student()
    save_model(tmp_path, model, spec)
    evaluation = {"accuracy": 61.5, "ci95": 1.2, "episodes": 100, "way": 5, "shot": 5, "params": 123, "gmacs": 4.5}
    record_evaluation(tmp_path, evaluation)
    assert api.load_model(tmp_path).card["evaluation"] == evaluation


# ------------------------------------------------------------------ bad folders: one line each
def cli_error(folder: Path) -> str:
    """``mkd export`` of ``folder`` fails as a user error: exit 2, one ``error:`` line."""
    code, out, err = run_cli("export", folder, "--format", "onnx", "-o", folder.parent / "out")
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert not (folder.parent / "out").exists()
    return lines[0]


@pytest.fixture
def saved(tmp_path, plugin_manager) -> Path:
    model, spec = student()
    save_model(tmp_path / "model", model, spec)
    return tmp_path / "model"


def edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / CARD).read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = card
        for key in path:
            target = target[key]
        target[last] = value
    (folder / CARD).write_text(json.dumps(card))


def test_folder_without_a_card(saved):
    (saved / CARD).unlink()
    line = cli_error(saved)
    assert str(saved) in line and "no model.json" in line


def test_card_from_a_newer_mkd(saved):
    edit_card(saved, format=CARD_FORMAT + 1, versions__mkd="9.0.0")
    line = cli_error(saved)
    assert f"format {CARD_FORMAT + 1}" in line and "9.0.0" in line and "upgrade" in line


def test_component_from_a_plugin_that_is_not_installed(saved):
    edit_card(saved, spec__backbone__name="fancynet",
              versions__components__backbone={"name": "fancynet", "package": "mkd-fancynet", "version": "1.2.0"})
    line = cli_error(saved)
    assert "backbone 'fancynet'" in line and "mkd-fancynet 1.2.0" in line and "pip install 'mkd-fancynet>=1.2.0'" in line


def test_weights_of_another_model(saved, tmp_path):
    other, other_spec = student(out_dim=8)
    save_model(tmp_path / "other", other, other_spec)
    (saved / WEIGHTS).write_bytes((tmp_path / "other" / WEIGHTS).read_bytes())
    line = cli_error(saved)
    assert str(saved / WEIGHTS) in line and "do not fit model.json" in line


def test_damaged_weights(saved):
    (saved / WEIGHTS).write_bytes(b"junk")
    line = cli_error(saved)
    assert str(saved / WEIGHTS) in line and "corrupt" in line
