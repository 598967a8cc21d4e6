"""MFM and baseline fusions (small dims), and the paper's episode costs (meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mkdcore import api
from mkdcore.errors import TrainingError

ROOT = Path(__file__).resolve().parents[1]


def feats(mods, b=2, t=4, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, t, d, generator=g) for m in mods}


@pytest.mark.parametrize("mods", [["rgb", "depth", "flow"], ["rgb", "flow"], ["rgb", "depth", "flow", "skeleton"]])
def test_mfm_shapes_and_structure(mods):
    mfm = api.create("fusion", "mfm", modalities=mods, dim=32, seq_len=4, layers=1)
    out = mfm(feats(mods))
    assert out.shape == (2, 4, 32)
    assert mfm.multi.encoder.layers[0].self_attn.num_heads == len(mods)
    assert mfm.multi.encoder.layers[0].self_attn.embed_dim == 32 * len(mods)
    assert len(mfm.pair.pes) == 2  # one rgb PE + one partner PE shared by all partners
    out.sum().backward()
    assert all(p.grad is not None for p in mfm.multi.parameters())


def test_mfm_is_sum_of_levels_with_partner_rolled():
    mods = ["rgb", "depth", "flow"]
    torch.manual_seed(0)
    mfm = api.create("fusion", "mfm", modalities=mods, dim=32, seq_len=4, layers=1, shift=1).eval()
    x = feats(mods)
    with torch.no_grad():
        expected = mfm.multi([x["rgb"], x["depth"], x["flow"]])
        for m in ("depth", "flow"):
            expected = expected + mfm.pair([x["rgb"], torch.cat([x[m][:, 1:], x[m][:, :1]], dim=1)])
        torch.testing.assert_close(mfm(x), expected)
        # the order of the input dict does not matter; modalities are matched by name
        torch.testing.assert_close(mfm({m: x[m] for m in reversed(mods)}), expected)


def test_fusion_baselines_and_errors():
    mods = ["rgb", "depth"]
    x = feats(mods)
    torch.testing.assert_close(api.create("fusion", "mean", modalities=mods, dim=32)(x), (x["rgb"] + x["depth"]) / 2)
    assert api.create("fusion", "concat", modalities=mods, dim=32)(x).shape == (2, 4, 32)
    with pytest.raises(TrainingError, match="expected modalities"):
        api.create("fusion", "mean", modalities=mods, dim=32)({"rgb": x["rgb"]})
    with pytest.raises(TrainingError, match="seq_len"):
        api.create("fusion", "mfm", modalities=mods, dim=32, seq_len=2, layers=1)(x)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,gmacs,mparams",
    [("ucf101_trx_resnet50", 1023.3, 47.1), ("ucf101_resnet18", 454.0, 22.7), ("ucf101_mobilenetv3_large", 72.55, 16.35)],
)
def test_profile_matches_paper(config, gmacs, mparams):
    """Spec 7: the paper's thop counts for a 5-way 5-shot 1-query, 8 x 224 px episode."""
    from click.testing import CliRunner

    from mkdcore.cli.profile_cmd import profile

    result = CliRunner().invoke(profile, [str(ROOT / "configs/paper" / f"{config}.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["gmacs"] == pytest.approx(gmacs, rel=0.01)
    assert data["params"] / 1e6 == pytest.approx(mparams, rel=0.01)
    assert data["gflops"] == pytest.approx(2 * data["gmacs"], rel=0.05)  # FLOPs ~ 2 x MACs (+ attention matmuls)


def test_paper_configs_validate():
    from mkdcore.config import load_config

    files = sorted((ROOT / "configs/paper").glob("*.yaml"))
    assert len(files) == 10
    for f in files:
        cfg = load_config(f)
        assert cfg.data.crop == 224 and cfg.evaluation.episodes == 10000
        if f.stem != "ucf101_trx_resnet50":
            assert cfg.student.backbone.options["projection"] == "2fc" and cfg.student.head.options["temporal_set"] == [2]
            assert cfg.training.tasks == 70010 and cfg.fusion.training.lr == 2e-5 and cfg.teacher.training.tasks == 70020
