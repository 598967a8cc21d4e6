"""AdaBins (depth backend adabins / model=adabins): the official key sets loaded strictly, the
encoder taps, the bins head written out from the fact sheet, infer.py's flip averaging, one-line
errors, and `mkd data derive -m depth -o model=adabins` on a random official-format file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mkdcore import testing
from mkdcore.errors import ConfigError
from mkdcore.modalities import adabins as ab
from mkdcore.modalities.checkpoints import load_strict
from tests.expert_helpers import manifest, needs_fixtures, one_video, randomised


def stored_state(m: dict, make=lambda shape, dtype: torch.empty(shape, device="meta", dtype=dtype)) -> dict:
    """The state dict as the official file stores it: 'module.' keys, the older conv names."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {v.get("stored_as", "module." + k): make(v["shape"], dtypes[v["dtype"]]) for k, v in m["state_dict"].items()}


@needs_fixtures
@pytest.mark.parametrize("dataset", ["nyu", "kitti"])
def test_every_manifest_key_loads_strictly(dataset):
    m = manifest(f"adabins_{dataset}")
    state = ab.official_keys_to_ours(stored_state(m))
    assert set(state) == set(m["state_dict"])
    d = ab.DATASETS[dataset]
    net = load_strict(lambda: ab.UnetAdaptiveBins(d.min_depth, d.max_depth), state, dataset, "hint")
    assert sum(p.numel() for p in net.parameters()) == m["num_parameters"]
    assert len(net.state_dict()) == m["num_state_dict_entries"]
    edges, pred = net(torch.empty(1, 3, d.height, d.width, device="meta"))  # the fact sheet's meta check
    assert tuple(edges.shape) == (1, 257) and tuple(pred.shape) == (1, 1, d.height // 2, d.width // 2)
    # the current names without the prefix load too
    plain = {k: torch.empty(v["shape"], device="meta") for k, v in m["state_dict"].items()}
    load_strict(lambda: ab.UnetAdaptiveBins(), ab.official_keys_to_ours(plain), dataset, "hint")


@needs_fixtures
def test_mismatches_are_one_line_naming_the_keys():
    state = ab.official_keys_to_ours(stored_state(manifest("adabins_nyu")))
    del state["decoder.conv3.bias"]
    state["encoder.original_model.classifier.weight"] = torch.empty(1000, 2048, device="meta")
    with pytest.raises(ConfigError) as err:
        load_strict(ab.UnetAdaptiveBins, state, "depth: AdaBins weights f", "hint")
    msg = str(err.value)
    assert "\n" not in msg and "1 missing key(s): decoder.conv3.bias" in msg
    assert "1 unexpected key(s): encoder.original_model.classifier.weight" in msg


def test_truncated_and_foreign_files_are_one_line(tmp_path):
    good = tmp_path / "AdaBins_nyu.pt"
    torch.save({"model": {"module.conv_out.0.bias": torch.zeros(256)}, "optimizer": {}, "epoch": 1}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    for path, words in ((cut, "not a readable PyTorch checkpoint"), (good, "missing key(s)"),
                        (tmp_path / "none.pt", "does not exist")):
        with pytest.raises(ConfigError) as err:
            ab.load_adabins(path)
        assert words in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value), str(err.value)


def test_encoder_taps_are_the_official_five():
    """blocks.0, .1, .2, .4 and conv_head *before* bn2 (fact sheet 1.2), on timm's modules."""
    torch.manual_seed(0)
    with torch.device("meta"):
        enc = ab.Encoder()
    enc = randomised(enc).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        taps = enc(x)
        m = enc.original_model
        h = m.blocks[:7](m.bn1(m.conv_stem(x)))
        head = m.conv_head(h)
    assert [(t.shape[1], t.shape[2]) for t in taps] == [(24, 32), (40, 16), (64, 8), (176, 4), (2048, 2)]
    torch.testing.assert_close(taps[-1], head)


def test_bins_head_equals_the_fact_sheet_written_out():
    """mViT (1.4 steps 1-6) and the output head on the module's own weights, 144 patches."""
    torch.manual_seed(1)
    head = ab.MViT().eval()
    conv_out = torch.nn.Conv2d(128, 256, 1)
    u = torch.randn(1, 128, 192, 192)
    with torch.inference_mode():
        widths, ranges = head(u)
        edges, depth = ab.bins_to_depth(widths, torch.softmax(conv_out(ranges), 1), 0.001, 10.0)
        pt = head.patch_transformer
        tok = F.conv2d(u, pt.embedding_convPxP.weight, pt.embedding_convPxP.bias, stride=16)  # (1, 128, 12, 12)
        tok = tok.flatten(2)[0].T + pt.positional_encodings[:144]  # (S, E) row-major patches
        out = pt.transformer_encoder(tok[:, None])[:, 0]  # (S, E)
        r = head.regressor
        y = r[4](F.leaky_relu(r[2](F.leaky_relu(r[0](out[0]), 0.01)), 0.01))
        y = torch.relu(y) + 0.1
        w = y / y.sum()
        q = out[1:129]  # (128, E)
        feat = F.conv2d(u, head.conv3x3.weight, head.conv3x3.bias, padding=1)[0]  # (E, h, w)
        want_ranges = torch.einsum("qc,chw->qhw", q, feat)
        p = torch.softmax(conv_out(want_ranges[None]), 1)[0]
        e = torch.cat([torch.tensor([0.001]), 0.001 + torch.cumsum(9.999 * w, 0)])
        c = (e[:-1] + e[1:]) / 2
        want_depth = (p * c[:, None, None]).sum(0)
    torch.testing.assert_close(widths[0], w)
    torch.testing.assert_close(ranges[0], want_ranges, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(edges[0], e)
    assert abs(float(edges[0, -1]) - 10.0) < 1e-4
    torch.testing.assert_close(depth[0, 0], want_depth)


def test_flip_averaging_clipping_and_upsampling_as_infer_py():
    class Stub(torch.nn.Module):  # depth = 20 * the first input channel at half resolution, any range
        min_val, max_val = 0.001, 10.0

        def forward(self, x):
            return torch.zeros(x.shape[0], 257), 20 * x[:, :1, ::2, ::2]

    x = torch.linspace(-1, 1, 8 * 8).view(1, 1, 8, 8).repeat(1, 3, 1, 1)
    raw = (20 * x[:, :1, ::2, ::2]).clamp(0.001, 10)
    flipped = (20 * x.flip(3)[:, :1, ::2, ::2]).clamp(0.001, 10).flip(3)
    want = F.interpolate(0.5 * (raw + flipped), size=(8, 8), mode="bilinear", align_corners=True)[:, 0]
    torch.testing.assert_close(ab.predict(Stub(), x, flip=True), want)
    no_flip = F.interpolate(raw, size=(8, 8), mode="bilinear", align_corners=True)[:, 0]
    torch.testing.assert_close(ab.predict(Stub(), x, flip=False), no_flip)


def test_size_rule_is_a_one_line_option_error(tmp_path):
    code, _, err = testing.run_cli("data", "derive", testing.tiny_dataset(tmp_path), "-m", "depth",
                                   "-o", "model=adabins", "-o", "size=[64,64]")
    assert code == 2 and err.count("\n") == 1 and "129..500 patches" in err, err


def test_mkd_data_derive_with_a_random_official_file(tmp_path):
    """{'model': 'module.'-prefixed state with the old names, 'optimizer', 'epoch'} as train.py saves it."""
    torch.manual_seed(2)
    with torch.device("meta"):
        shapes = ab.UnetAdaptiveBins().state_dict()

    def make(shape, dtype):
        n = int(np.prod(shape))
        if dtype == torch.int64:
            return torch.zeros(shape, dtype=dtype)
        return (torch.rand(min(n, 1 << 16)).repeat(-(-n // (1 << 16)))[:n].view(shape) * 0.02).contiguous()

    m = {"state_dict": {k: {"shape": list(v.shape), "dtype": "int64" if v.dtype == torch.int64 else "float32"}
                        for k, v in shapes.items()}}
    for old, new in ab.OLD_NAMES.items():
        for k in m["state_dict"]:
            if k.startswith(new):
                m["state_dict"][k]["stored_as"] = "module." + old + k[len(new):]
    model = stored_state(m, make)
    for k, v in model.items():
        if k.endswith("running_var"):
            v.fill_(1.0)
    first = next(iter(model))
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(model[first]),
                               "exp_avg_sq": torch.zeros_like(model[first])}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-3, "weight_decay": 0.1,
                                   "amsgrad": False, "params": [0]}]}
    weights = tmp_path / "AdaBins_nyu.pt"
    torch.save({"model": model, "optimizer": optimizer, "epoch": 24}, weights)
    root = one_video(testing.tiny_dataset(tmp_path, classes=3, videos=1, frames=2, size=32))
    code, out, err = testing.run_cli("data", "derive", root, "-m", "depth", "-o", "model=adabins", "-o", f"weights={weights}",
                                     "-o", "size=[352,384]", "-o", "flip=false", "-o", "batch_size=2")
    assert code == 0, out + err
    images = sorted((root / "depth_l8").rglob("*.jpg"))
    assert len(images) == 2 and cv2.imread(str(images[0])).shape == (32, 32, 3)


def test_metric_depth_is_drawn_near_warm():
    from plugins.modality_depth import Depth

    raw = np.full((1, 4, 8), 5.0, np.float32)
    raw[0, :, :4] = 0.5  # left half near (AdaBins gives metres: smaller = nearer)
    img = Depth(model="adabins", output="disparity").render(raw)[0]  # `output` does not apply to metres
    assert img[0, 0, 0] >= 120 and img[0, 0, 2] < 30 and img[0, 7, 2] >= 120
