"""MFM and baseline fusions (small dims), and the paper's episode costs (meta device)."""

from __future__ import annotations

import json
import math
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


# ---- MFM forward written out from spec section 4 (plain tensor algebra on the module's
# weights, read by name from its state dict): PE_m(x) = LayerNorm(x + E_m[t]); level 1 = post-LN
# encoder (M heads, ReLU feed-forward of width 2048) over the channel-concatenated modalities,
# then Linear M*D -> D; level 2 = ONE shared rgb-x encoder (2 heads) with the partner rolled by
# -1 frame; F_T = level 1 + sum of the level-2 pairs. Dropout is the identity in eval.

def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].t() + sd[f"{name}.bias"]


def _layer_norm(x, sd, name, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _attention(x, sd, name, heads):
    b, t, width = x.shape
    q, k, v = (x @ sd[f"{name}.in_proj_weight"].t() + sd[f"{name}.in_proj_bias"]).chunk(3, dim=-1)
    split = lambda y: y.reshape(b, t, heads, width // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = (q @ k.transpose(-1, -2) / math.sqrt(width // heads)).softmax(-1)  # (b, heads, t, t): over time
    return _linear((weights @ v).transpose(1, 2).reshape(b, t, width), sd, f"{name}.out_proj")


def _encoder_layer(x, sd, name, heads):
    """Post-LN: x = LN1(x + SelfAttn(x)); x = LN2(x + W2 ReLU(W1 x))."""
    x = _layer_norm(x + _attention(x, sd, f"{name}.self_attn", heads), sd, f"{name}.norm1")
    ff = _linear(torch.relu(_linear(x, sd, f"{name}.linear1")), sd, f"{name}.linear2")
    return _layer_norm(x + ff, sd, f"{name}.norm2")


def _fusion_level(xs, sd, name, heads, layers):
    frames = xs[0].shape[1]
    joint = torch.cat([_layer_norm(x + sd[f"{name}.pes.{i}.table.weight"][:frames], sd, f"{name}.pes.{i}.norm")
                       for i, x in enumerate(xs)], dim=-1)
    for layer in range(layers):
        joint = _encoder_layer(joint, sd, f"{name}.encoder.layers.{layer}", heads)
    return _linear(joint, sd, f"{name}.out.0")


def spec_mfm(x, sd, mods, layers):
    fused = _fusion_level([x[m] for m in mods], sd, "multi", len(mods), layers)
    for partner in mods[1:]:
        rolled = torch.cat([x[partner][:, 1:], x[partner][:, :1]], dim=1)  # rgb frame t meets frame t+1
        fused = fused + _fusion_level([x["rgb"], rolled], sd, "pair", 2, layers)
    return fused


@pytest.mark.parametrize("mods", [["rgb", "depth", "flow"], ["rgb", "depth", "flow", "skeleton"]])
def test_mfm_equals_spec_forward_with_ff_2048(mods):
    """Small D = 16 but the method's feed-forward width 2048 (!= D), 2 layers, non-trivial LayerNorms."""
    dim, frames, layers = 16, 4, 2
    torch.manual_seed(0)
    mfm = api.create("fusion", "mfm", modalities=mods, dim=dim, seq_len=frames, layers=layers, ff_dim=2048).eval()
    with torch.no_grad():
        for name, p in mfm.named_parameters():  # LayerNorms start at (1, 0): make scale and shift matter
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    sd = mfm.state_dict()
    assert sd["multi.encoder.layers.0.linear1.weight"].shape == (2048, len(mods) * dim)
    assert sd["pair.encoder.layers.1.linear2.weight"].shape == (2 * dim, 2048)
    x = feats(mods, b=3, t=frames, d=dim, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(mfm(x), spec_mfm(x, sd, mods, layers), rtol=1e-4, atol=1e-4)


def test_mfm_paper_size_feed_forward_is_2048():
    """D = 2048, 3 modalities: FF 6144 -> 2048 -> 6144 and 4096 -> 2048 -> 4096 (spec 4.1), built on meta."""
    with torch.device("meta"):
        mfm = api.create("fusion", "mfm")
    assert mfm.multi.encoder.layers[1].linear1.weight.shape == (2048, 6144)
    assert mfm.pair.encoder.layers[1].linear1.weight.shape == (2048, 4096)
    assert mfm.multi.encoder.layers[0].self_attn.num_heads == 3 and mfm.pair.encoder.layers[0].self_attn.num_heads == 2
    assert len(mfm.multi.encoder.layers) == 2 and mfm.multi.encoder.norm is None


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
