"""``mkd export``: the exported frame encoder and few-shot head give the eager model's
outputs (max abs difference <= 1e-4) for a ResNet-18 and a MobileNetV3-small student in
every format, on inputs other than the ones they were traced with (another batch size,
another support size with unequal shots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mkdcore import api
from mkdcore.config import Component
from mkdcore.errors import DataError
from mkdcore.export.runtime import load_exported, open_model
from mkdcore.export.writer import FORMATS, export_model
from mkdcore.models.build import build, fewshot_spec
from mkdcore.models.card import CARD
from mkdcore.models.folder import save_model
from mkdcore.testing import run_cli

FRAMES, SIZE, WAY, SHOT = 4, 64, 3, 2
TOL = 1e-4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["resnet18", "mobilenetv3_small"])
def model_folder(request, tmp_path_factory) -> Path:
    """A saved two-branch student (maxmean pooling, 2fc, TRX) with random weights."""
    torch.manual_seed(0)
    spec = fewshot_spec(Component(name=request.param, options={"projection": "2fc", "out_dim": 16}),
                        Component(name="trx", options={"out_dim": 8, "temporal_set": [2]}), FRAMES)
    spec.update(modality="rgb", variant="lite-mkd",
                data={"root": "x", "split": "x", "split_id": "03", "frames": FRAMES, "resize": SIZE, "crop": SIZE, "normalize": "none"})
    model, resolved = build(spec)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    save_model(folder, model, resolved)
    return folder


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    support = torch.rand(7, FRAMES, 3, SIZE, SIZE, generator=g)  # 7 != WAY * SHOT, shots 3/2/2
    queries = torch.rand(4, FRAMES, 3, SIZE, SIZE, generator=g)  # 4 != the traced batch
    return support, torch.tensor([0, 1, 2, 0, 1, 2, 0]), queries


@pytest.mark.parametrize("fmt", list(FORMATS))
@torch.no_grad()
def test_exported_equals_eager(model_folder, fmt, tmp_path):
    eager = api.load_model(model_folder)
    out = tmp_path / fmt
    if fmt == "onnx":  # the command itself, once per backbone
        code, _stdout, stderr = run_cli("export", model_folder, "--format", fmt, "--way", WAY, "--shot", SHOT, "-o", out)
        assert code == 0, stderr
    else:
        export_model(eager, fmt, WAY, SHOT, out)
    exported = load_exported(out)
    assert isinstance(open_model(out), type(exported))
    support, labels, queries = inputs()

    feats_q, feats_s = exported.encode(queries), exported.encode(support)
    want_q = torch.cat(eager.model.encode(queries), dim=-1)  # the whole model's branch features
    assert feats_q.shape == (4, FRAMES, 2 * 16)
    assert (feats_q - want_q).abs().max().item() <= TOL

    logits = exported.head(feats_s, labels, feats_q)
    want = eager.model(support, labels, queries, way=WAY)["logits"]  # FewShotModel: branch logits summed
    assert logits.shape == (4, WAY)
    assert (logits - want).abs().max().item() <= TOL

    card = json.loads((out / CARD).read_text())
    e = card["export"]
    assert e["format"] == fmt and (e["way"], e["shot"]) == (WAY, SHOT)
    assert sorted(p.name for p in out.iterdir()) == sorted([CARD, *e["files"].values()])
    assert e["inputs"]["encoder"]["clips"]["shape"] == ["N", FRAMES, 3, SIZE, SIZE]
    assert e["outputs"]["head"]["logits"]["shape"] == ["Nq", WAY]
    assert card["spec"] == eager.spec and card["input"] == eager.input
    if fmt == "onnx":
        assert onnx_signature(out / e["files"]["encoder"]) == card_signature(e, "encoder")
        assert onnx_signature(out / e["files"]["head"]) == card_signature(e, "head")


def onnx_signature(path: Path) -> dict[str, tuple[list[str | int], str]]:
    """The graph's declared inputs and outputs: name -> (shape, dtype); a dynamic size is its name."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dtypes = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
    return {v.name: ([d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim], dtypes[v.type.tensor_type.elem_type])
            for v in [*graph.input, *graph.output]}


def card_signature(export: dict, part: str) -> dict[str, tuple[list[str | int], str]]:
    """The same from the card's ``export`` section (dynamic sizes named in lower case in the graph)."""
    return {name: ([d.lower() if isinstance(d, str) else d for d in io["shape"]], io["dtype"])
            for io in (export["inputs"][part], export["outputs"][part]) for name, io in io.items()}


def test_exported_model_refuses_what_it_was_not_exported_for(model_folder, tmp_path):
    eager = api.load_model(model_folder)
    export_model(eager, "torchscript", WAY, SHOT, tmp_path / "ts")
    exported = load_exported(tmp_path / "ts")
    with pytest.raises(DataError, match=f"reads {SIZE}x{SIZE} frames, got 32x32"):
        exported.encode(torch.rand(1, FRAMES, 3, 32, 32))
    feats = torch.rand(5, FRAMES, 32)
    with pytest.raises(DataError, match="exported for 3 classes"):
        exported.head(feats, torch.tensor([0, 1, 2, 3, 3]), feats)
    code, _, err = run_cli("export", tmp_path / "ts", "-o", tmp_path / "again")  # an export is not a model folder
    assert code == 2 and err.count("\n") == 1 and "exported" in err
