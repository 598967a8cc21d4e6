"""timm backbones (shapes, projections, local weights) and the few-shot model wrappers."""

from __future__ import annotations

import pytest
import torch

from mkdcore import api
from mkdcore.errors import MkdError, PluginError
from mkdcore.models.fewshot import FeatureHeadModel, FewShotModel


@pytest.mark.parametrize(
    "name,projection,trunk_dim",
    [("resnet18", "2fc", 512), ("mobilenetv3_small", "1fc", 576), ("mobilenetv3_large", "none", 960), ("timm:resnet10t", "2fc", 512)],
)
def test_backbone_shapes(name, projection, trunk_dim):
    bb = api.create("backbone", name, projection=projection, out_dim=48)
    out = bb(torch.rand(3, 3, 64, 64))
    expected = trunk_dim if projection == "none" else 48
    assert bb.out_dim == expected and bb.trunk_dim == trunk_dim
    assert out["features"].shape == (3, expected)
    assert ("features_2" in out) == (projection == "2fc") and bb.branches == (2 if projection == "2fc" else 1)


def test_mobilenet_trunk_has_no_conv_head():
    """The paper used torchvision ``.features`` (960 channels), not timm's 1280-wide conv_head."""
    bb = api.create("backbone", "mobilenetv3_large")
    assert not any("conv_head" in k for k in bb.state_dict())
    assert sum(p.numel() for p in bb.parameters()) == pytest.approx(2.97e6, rel=0.01)


def test_maxmean_pooling_is_max_then_mean():
    from mkdcore.models.backbone import pool_features

    x = torch.randn(2, 5, 7, 7)
    cells = torch.stack([x[..., i0:i1, j0:j1].amax((-1, -2)) for i0, i1 in [(0, 2), (1, 4), (3, 6), (5, 7)] for j0, j1 in [(0, 2), (1, 4), (3, 6), (5, 7)]], -1)
    torch.testing.assert_close(pool_features(x, "maxmean"), cells.mean(-1))
    torch.testing.assert_close(pool_features(x, "avg"), x.mean((2, 3)))


def test_unknown_timm_model_is_a_plugin_error():
    with pytest.raises(PluginError, match="timm:nonexistent_net"):
        api.create("backbone", "timm:nonexistent_net")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_loads_local_weights(tmp_path, suffix):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # with classifier, as files are
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    bb = api.create("backbone", "resnet18", pretrained=str(path))
    torch.testing.assert_close(bb.trunk.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(bb.trunk.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_torchvision_mobilenet_weights_map_onto_timm(tmp_path):
    import torchvision

    tv = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    bb = api.create("backbone", "mobilenetv3_small", pretrained=str(tmp_path / "tv.pth")).eval()
    tv.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.trunk.forward_features(x), tv.features(x), rtol=1e-4, atol=1e-4)


def test_wrong_or_missing_weights_give_one_line_errors(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(MkdError) as err:
        api.create("backbone", "mobilenetv3_small", pretrained=str(tmp_path / "r18.pth"))
    msg = str(err.value)
    assert "r18.pth" in msg and "missing keys: " in msg and "unexpected keys: " in msg and "\n" not in msg
    with pytest.raises(MkdError, match="not found"):
        api.create("backbone", "resnet18", pretrained=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("way,shot,query,frames,branches", [(5, 1, 1, 3, 2), (3, 2, 2, 3, 1), (2, 2, 3, 4, 2)])
def test_fewshot_model_outputs(way, shot, query, frames, branches):
    torch.manual_seed(0)
    bb = api.create("backbone", "resnet18", projection="2fc" if branches == 2 else "1fc", out_dim=32)
    head = api.create("head", "trx", in_dim=32, out_dim=16, temporal_set=[2], seq_len=frames)
    model = FewShotModel(bb, head, chunk_frames=5).eval()
    labels = torch.arange(way).repeat_interleave(shot)
    with torch.no_grad():
        out = model(torch.rand(way * shot, frames, 3, 64, 64), labels, torch.rand(way * query, frames, 3, 64, 64))
    assert out["logits"].shape == out["logits_1"].shape == (way * query, way)
    assert out["relations_1"].shape == (way, way - 1)
    assert out["support_features"].shape == (way * shot, frames, 32)
    if branches == 2:
        torch.testing.assert_close(out["logits"], out["logits_1"] + out["logits_2"])
        assert out["relations"] is out["relations_2"]
    else:
        assert "logits_2" not in out and torch.equal(out["logits"], out["logits_1"])


def test_chunking_does_not_change_eval_features():
    torch.manual_seed(0)
    bb = api.create("backbone", "resnet18", projection="1fc", out_dim=16)
    head = api.create("head", "mean_distance")
    clips = torch.rand(3, 4, 3, 64, 64)
    with torch.no_grad():
        a = FewShotModel(bb, head).eval().encode(clips)[0]
        b = FewShotModel(bb, head, chunk_frames=5).eval().encode(clips)[0]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_feature_head_model_matches_head():
    head = api.create("head", "mean_distance")
    s, q = torch.randn(6, 4, 8), torch.randn(3, 4, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = FeatureHeadModel(head)(s, labels, q)
    assert torch.equal(out["logits"], head(s, labels, q)["logits"]) and out["relations"].shape == (3, 2)
