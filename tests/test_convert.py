"""`mkd convert`: original Lite-MKD checkpoints (rebuilt from the format manifests) become
mkd model folders whose outputs are the original architecture's outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mkdcore.convert.convert import convert_state
from mkdcore.models.folder import load_model
from mkdcore.testing import run_cli
from tests.original_checkpoints import NAMES, manifest, original_state, save_original

DIM, OUT = 16, 8  # scaled widths (the manifests' 2048 and 1152)


def test_all_eight_manifests() -> None:
    assert len(NAMES) == 8


@pytest.mark.parametrize("name", NAMES)
def test_every_key_of_every_full_size_checkpoint_is_mapped(name: str) -> None:
    """Paper-size keys and shapes on the meta device: every original key is mapped or
    dropped by rule (only TRX's fixed ``pe.pe`` and unused ``norm_v``), every mkd weight
    is filled, and the parameter count is the manifest's minus ``norm_v``."""
    m = manifest(name)
    conv = convert_state(original_state(name, device="meta"), where=name)
    assert sorted(conv.keys.mapped) + sorted(conv.keys.dropped) and not conv.keys.unmapped
    assert set(conv.keys.mapped) | set(conv.keys.dropped) == set(m["state_dict"])
    assert {k.rsplit(".", 2)[-2] for k in conv.keys.dropped} <= {"pe", "norm_v"}
    assert set(conv.state) == set(conv.model.state_dict())
    norm_v = sum(1152 for k in m["state_dict"] if "norm_v" in k)
    assert sum(p.numel() for p in conv.model.parameters()) == m["num_parameters"] - norm_v
    expected_kind = {"student": "student", "baseline": "baseline", "teacher": None}[name.split("_")[0]]
    if expected_kind:
        assert conv.kind == expected_kind
        assert conv.backbone == name.split("_", 1)[1]


# ----------------------------------------------------------- the original forward, rebuilt
class OriginalStudent(nn.Module):
    """The original student's forward from torchvision parts: the trunk as the original
    holds it (``nn.Sequential`` of torchvision children, keys exactly the checkpoint's),
    4x4 adaptive max pool + mean (spec 3.1), its Linear branches, the shared TRX."""

    def __init__(self, state: dict[str, torch.Tensor], backbone: str) -> None:
        super().__init__()
        import torchvision

        if backbone == "resnet18":
            self.trunk = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
            prefix = "backbone.resnet."
        else:
            make = getattr(torchvision.models, "mobilenet_v3_large" if backbone.endswith("large") else "mobilenet_v3_small")
            self.trunk = nn.Sequential(make().features)
            prefix = "backbone.mobile."
        trunk = {k.removeprefix(prefix).replace("module.", ""): v for k, v in state.items() if k.startswith(prefix)}
        self.trunk.load_state_dict(trunk, strict=True)
        names = [n for n in ("fc1", "fc2", "res18_2048", "fc") if f"backbone.{n}.weight" in state]
        self.fcs = nn.ModuleList()
        for n in names:
            w = state[f"backbone.{n}.weight"]
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.load_state_dict({"weight": w, "bias": state[f"backbone.{n}.bias"]})
            self.fcs.append(fc)
        from mkdcore.models.trx import TRXHead

        self.head = TRXHead(in_dim=DIM, out_dim=OUT, temporal_set=[2], seq_len=8)
        t = self.head.transformers[0]
        for part in ("k_linear", "v_linear", "norm_k"):
            getattr(t, part).load_state_dict({p: state[f"classifier.transformers.{part}.{p}"] for p in ("weight", "bias")})

    def features(self, clips: torch.Tensor) -> list[torch.Tensor]:
        n, t = clips.shape[:2]
        x = self.trunk(clips.flatten(0, 1))
        pooled = F.adaptive_max_pool2d(x, (4, 4)).flatten(2).mean(-1)
        return [fc(pooled).reshape(n, t, -1) for fc in self.fcs]

    def forward(self, support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        s, q = self.features(support), self.features(queries)
        return sum(self.head(a, labels, b, way=2)["logits"] for a, b in zip(s, q))


@pytest.mark.parametrize("name", ["student_resnet18", "student_mobilenetv3_small", "baseline_mobilenetv3_large"])
def test_converted_student_equals_the_original_forward(name: str, tmp_path) -> None:
    """Converted through the CLI (ResNet keys saved with DataParallel's ``module.``), loaded
    from its folder: logits and features equal the torchvision-built original's (eval)."""
    backbone = name.split("_", 1)[1]
    state = original_state(name, DIM, OUT)
    saved = state
    if backbone == "resnet18":
        saved = {k.replace("backbone.resnet.", "backbone.resnet.module."): v for k, v in state.items()}
    ckpt = save_original(tmp_path / "202302170343ucf19999.pt", saved)
    code, out, err = run_cli("convert", ckpt, "-o", tmp_path / "model")
    assert code == 0, err
    assert "0 unmapped" in out and "dropped classifier.transformers.norm_v.weight" in out
    model, spec = load_model(tmp_path / "model")
    reference = OriginalStudent(state, backbone).eval()
    torch.manual_seed(0)
    support, query = torch.rand(2, 8, 3, 64, 64), torch.rand(2, 8, 3, 64, 64)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        got = model(support, labels, query, way=2)
        want = reference(support, labels, query)
        want_features = reference.features(support)
    torch.testing.assert_close(got["support_features"], want_features[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["logits"], want, rtol=1e-4, atol=1e-4)
    assert spec["variant"] == ("lite-mkd" if name.startswith("student") else "baseline")


def test_converted_mfm_equals_a_model_built_with_the_same_weights(tmp_path) -> None:
    """A scaled MFM teacher in the original's 4-key container (SGD state, MultiStepLR with a
    Counter): the converted folder's fusion and head outputs equal an mkd MFM + TRX built
    directly and given the original tensors module by module."""
    from mkdcore.models.build import build

    state = original_state("teacher_mfm", DIM, OUT)
    ckpt = save_original(tmp_path / "checkpoint25000.pt", state, "teacher", 25000)
    code, out, err = run_cli("convert", ckpt, "-o", tmp_path / "mfm", "--kind", "teacher-mfm")
    assert code == 0, err
    converted, spec = load_model(tmp_path / "mfm")
    direct, _ = build({"type": "fusion_teacher", "modalities": ["rgb", "depth", "flow"], "frames": 8, "dim": DIM,
                       "fusion": {"name": "mfm", "options": {"dim": DIM, "ff_dim": DIM, "layers": 2}},
                       "head": {"name": "trx", "options": {"in_dim": DIM, "out_dim": OUT, "temporal_set": [2]}}})

    def put(module: nn.Module, prefix: str) -> None:
        own = module.state_dict()
        module.load_state_dict({k: state[prefix + k] for k in own}, strict=True)

    for block, ours in (("three_fusion", direct.fusion.multi), ("fusion", direct.fusion.pair)):
        for i, pe in enumerate(ours.pes, start=1):
            pe.table.weight.data = state[f"{block}.positionEncoding{i}.position_embeddings.weight"].clone()
            pe.norm.load_state_dict({p: state[f"{block}.positionEncoding{i}.LayerNorm.{p}"] for p in ("weight", "bias")})
        put(ours.encoder, f"{block}.transformer_encoder.")
        put(ours.out[0], f"{block}.f1.")
    for part in ("k_linear", "v_linear", "norm_k"):
        put(getattr(direct.head.transformers[0], part), f"bracnch.transformers.0.{part}.")
    direct.eval()
    torch.manual_seed(1)
    feats = {m: torch.randn(4, 8, DIM) for m in ("rgb", "depth", "flow")}
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(converted.fuse(feats), direct.fuse(feats))
        q = {m: v[2:] for m, v in feats.items()}
        s = {m: v[:2] for m, v in feats.items()}
        torch.testing.assert_close(converted(s, labels, q, way=2)["logits"], direct(s, labels, q, way=2)["logits"])
    assert spec["fusion"]["options"]["ff_dim"] == DIM and spec["fusion"]["options"]["layers"] == 2


# ----------------------------------------------------------------- one line for bad input
def _error(*args: object) -> str:
    code, out, err = run_cli("convert", *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture()
def student_ckpt(tmp_path):
    return save_original(tmp_path / "student.pt", original_state("student_mobilenetv3_small", DIM, OUT))


def test_truncated_and_foreign_files_are_one_line(student_ckpt, tmp_path) -> None:
    data = student_ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "not a readable PyTorch checkpoint" in _error(tmp_path / "cut.pt", "-o", tmp_path / "o1")
    (tmp_path / "notes.pt").write_text("hello")
    assert "not a readable PyTorch checkpoint" in _error(tmp_path / "notes.pt", "-o", tmp_path / "o2")
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "hook": print}, tmp_path / "code.pt")  # a global: refused
    assert "not a readable PyTorch checkpoint" in _error(tmp_path / "code.pt", "-o", tmp_path / "o3")
    assert "no such checkpoint file" in _error(tmp_path / "absent.pt", "-o", tmp_path / "o4")
    torch.save({"iteration": 3, "model_state_dict": {"a": 1}}, tmp_path / "ints.pt")
    assert "not a state dict of tensors" in _error(tmp_path / "ints.pt", "-o", tmp_path / "o5")
    assert not (tmp_path / "o1").exists()


def test_shape_mismatch_unmapped_and_wrong_flags_are_one_line(tmp_path) -> None:
    state = original_state("student_mobilenetv3_small", DIM, OUT)
    bad = dict(state, **{"backbone.fc2.weight": torch.zeros(DIM, 500)})
    line = _error(save_original(tmp_path / "shape.pt", bad), "-o", tmp_path / "o")
    assert "shape mismatch: backbone.fc2.weight is (16, 500), backbone.proj_2.weight needs (16, 576)" in line
    extra = dict(state, **{"backbone.extra.weight": torch.zeros(3)})
    assert "keys no student rule maps: backbone.extra.weight" in _error(save_original(tmp_path / "x.pt", extra), "-o", tmp_path / "o")
    missing = {k: v for k, v in state.items() if k != "backbone.mobile.0.3.block.1.0.weight"}
    line = _error(save_original(tmp_path / "m.pt", missing), "-o", tmp_path / "o")
    assert "have no source key: backbone.trunk.blocks.1.1.conv_dw.weight" in line
    ok = save_original(tmp_path / "ok.pt", state)
    assert "its trunk is a mobilenetv3_small, not a resnet18" in _error(ok, "-o", tmp_path / "o", "--backbone", "resnet18")
    assert "keys are those of a student checkpoint, not a teacher-mfm" in _error(ok, "-o", tmp_path / "o", "--kind", "teacher-mfm")
    assert "pe.pe has 12 rows, a TRX for 4 frames has 6" in _error(ok, "-o", tmp_path / "o", "--frames", "4")
    warped = dict(state, **{"classifier.transformers.pe.pe": state["classifier.transformers.pe.pe"] * 2})
    assert "is not the 0.1-scaled sinusoid" in _error(save_original(tmp_path / "pe.pe.pt", warped), "-o", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_bare_state_dict_and_dataparallel_teacher(tmp_path) -> None:
    """``fully_trained.pt`` (no wrapper) converts too; a per-modality ResNet-50 teacher's
    ``resnet.module.`` keys (2-GPU DataParallel) map onto the timm trunk (meta, full size)."""
    conv = convert_state(original_state("teacher_baseline_resnet50", device="meta"))
    assert conv.kind == "teacher-baseline" and conv.spec["head"]["name"] == "mean_distance"
    assert conv.keys.mapped["resnet.module.layer4.2.bn3.running_var"] == "backbone.trunk.layer4.2.bn3.running_var"
    ckpt = save_original(tmp_path / "fully_trained.pt", original_state("baseline_mobilenetv3_small", DIM, OUT), "bare")
    code, out, err = run_cli("convert", ckpt, "-o", tmp_path / "b")
    assert code == 0, err
    assert "baseline (mobilenetv3_small)" in out
