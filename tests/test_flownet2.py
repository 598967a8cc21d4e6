"""FlowNet2 (flow method=flownet2): the fact sheet's ops against naive loops, every released
key set loaded strictly, the stacking written out from the fact sheet, one-line errors, and
`mkd data derive -m flow -o method=flownet2` on a random official-format file."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mkdcore import testing
from mkdcore.errors import ConfigError
from mkdcore.modalities import flownet2 as fn
from mkdcore.modalities.checkpoints import load_strict
from tests.expert_helpers import manifest, needs_fixtures, one_video

MANIFESTS = {"flownet2": "FlowNet2", "flownet2c": "FlowNet2-C", "flownet2s": "FlowNet2-S",
             "flownet2sd": "FlowNet2-SD", "flownet2cs": "FlowNet2-CS", "flownet2css": "FlowNet2-CSS"}


def random_state(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values of every key (a tiled random block: fast for 162 M parameters)."""
    g = torch.Generator().manual_seed(seed)
    block = torch.randn(1 << 18, generator=g) * 0.02
    out = {}
    for k, v in net.state_dict().items():
        n = v.numel()
        out[k] = block.repeat(-(-n // block.numel()))[:n].view(v.shape).clone()
    return out


# --- the ops, against literal transcriptions of the fact sheet (2.5) -----------------------

def naive_correlation(f1: torch.Tensor, f2: torch.Tensor, max_disp: int, stride2: int) -> torch.Tensor:
    b, c, h, w = f1.shape
    r = max_disp // stride2
    d = 2 * r + 1
    out = torch.zeros(b, d * d, h, w, dtype=f1.dtype)
    for n in range(b):
        for j in range(-r, r + 1):
            for i in range(-r, r + 1):
                for y in range(h):
                    for x in range(w):
                        y2, x2 = y + stride2 * j, x + stride2 * i
                        if 0 <= y2 < h and 0 <= x2 < w:
                            out[n, (j + r) * d + (i + r), y, x] = sum(f1[n, ch, y, x] * f2[n, ch, y2, x2] for ch in range(c)) / c
    return out


def naive_resample(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    b, c, h, w = img.shape
    out = torch.zeros(b, c, flow.shape[2], flow.shape[3], dtype=img.dtype)
    for n in range(b):
        for y in range(flow.shape[2]):
            for x in range(flow.shape[3]):
                xf, yf = x + float(flow[n, 0, y, x]), y + float(flow[n, 1, y, x])
                x0, y0 = math.floor(xf), math.floor(yf)
                a, be = xf - x0, yf - y0
                cx = [min(max(x0, 0), w - 1), min(max(x0 + 1, 0), w - 1)]
                cy = [min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)]
                for ch in range(c):
                    out[n, ch, y, x] = ((1 - a) * (1 - be) * img[n, ch, cy[0], cx[0]] + a * (1 - be) * img[n, ch, cy[0], cx[1]]
                                        + (1 - a) * be * img[n, ch, cy[1], cx[0]] + a * be * img[n, ch, cy[1], cx[1]])
    return out


def test_correlation_equals_the_kernel_formula():
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    got = fn.correlation(f1, f2, max_displacement=4, stride2=2)
    assert got.shape == (2, 25, 5, 6)
    torch.testing.assert_close(got, naive_correlation(f1, f2, 4, 2), rtol=0, atol=1e-12)
    # the released setting: 441 channels, channel 220 = zero displacement = mean of f1*f2 over channels
    big = fn.correlation(f1, f2)
    assert big.shape == (2, 441, 5, 6)
    torch.testing.assert_close(big[:, 220], (f1 * f2).mean(1))


def test_resample2d_is_bilinear_with_border_clamping():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    flow = torch.randn(2, 2, 5, 7, generator=g, dtype=torch.float64) * 4  # many samples leave the image
    torch.testing.assert_close(fn.resample2d(img, flow), naive_resample(img, flow), rtol=0, atol=1e-12)


def test_channel_norm_is_l2_over_channels_without_epsilon():
    x = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])
    assert fn.channel_norm(x).tolist() == [[[[5.0, 0.0]]]]


def test_input_normalisation_per_sample_and_channel_over_both_frames():
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 3, 4, 4, generator=g) * 255, torch.rand(2, 3, 4, 4, generator=g) * 255
    x = fn.normalise_pair(a, b)
    for n in range(2):
        for c in range(3):
            mean = torch.cat([a[n, c].flatten(), b[n, c].flatten()]).mean()
            torch.testing.assert_close(x[n, c], (a[n, c] - mean) / 255)
            torch.testing.assert_close(x[n, 3 + c], (b[n, c] - mean) / 255)


# --- every released key set -----------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_manifest_key_loads_strictly(name):
    """Exactly the manifest's keys and shapes, assigned on the meta device; counts as the fact sheet."""
    m = manifest(name)
    state = {k: torch.empty(v["shape"], device="meta") for k, v in m["state_dict"].items()}
    assert fn.detect_variant(state) == MANIFESTS[name]
    net = load_strict(fn.VARIANTS[MANIFESTS[name]], state, name, "hint")
    assert sum(p.numel() for p in net.parameters()) == m["num_parameters"]
    assert len(net.state_dict()) == m["num_state_dict_entries"]
    out = net(torch.empty(1, 6, 384, 512, device="meta"))  # the manifest's meta forward check
    assert list(out.shape) == m["output_shape_check"]["input [1,3,2,384,512] -> output"]


@needs_fixtures
def test_mismatches_are_one_line_naming_the_keys():
    state = {k: torch.empty(v["shape"], device="meta") for k, v in manifest("flownet2")["state_dict"].items()}
    del state["flownetfusion.predict_flow0.bias"]
    state["flownetc.extra.weight"] = torch.empty(1, device="meta")
    state["flownets_1.conv1.0.weight"] = torch.empty(64, 6, 7, 7, device="meta")
    with pytest.raises(ConfigError) as err:
        load_strict(fn.FlowNet2, state, "flow: FlowNet2 weights f", "hint")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("1 missing key(s): flownetfusion.predict_flow0.bias", "1 unexpected key(s): flownetc.extra.weight",
                 "flownets_1.conv1.0.weight [64, 6, 7, 7] (network: [64, 12, 7, 7])"):
        assert part in msg


def test_truncated_and_foreign_files_are_one_line(tmp_path):
    good = tmp_path / "FlowNet2-S_checkpoint.pth.tar"
    torch.save({"epoch": 0, "state_dict": {"conv1.0.weight": torch.zeros(64, 6, 7, 7)}, "best_EPE": 1e10}, good)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(good.read_bytes()[:500])
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    other = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    for path, words in ((cut, "not a readable PyTorch checkpoint"), (text, "not a readable PyTorch checkpoint"),
                        (other, "not a FlowNet2 checkpoint"), (tmp_path / "missing.pth", "does not exist"),
                        (good, "missing key(s)")):
        with pytest.raises(ConfigError) as err:
            fn.load_flownet2(path)
        assert words in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value), str(err.value)


# --- the forward pass ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def flownet2() -> torch.nn.Module:
    """Full-size FlowNet2 with random values in every key, loaded strictly (CPU)."""
    with torch.device("meta"):
        shape_only = fn.FlowNet2()
    return load_strict(fn.FlowNet2, random_state(shape_only), "random", "hint")


def test_full_stack_equals_the_fact_sheet_written_out(flownet2):
    """2.3 step by step on the module's own sub-networks, for the second pair of a batch of
    two (64 px, random weights): the batched pass must give each pair its own flow."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 3, 64, 64, generator=g) * 255, torch.rand(2, 3, 64, 64, generator=g) * 255
    both = torch.stack([a[1:], b[1:]], 2)
    x = (both - both.mean(dim=(2, 3, 4), keepdim=True)) / 255.0
    x0, x1 = x[:, :, 0], x[:, :, 1]
    x = torch.cat([x0, x1], 1)
    up_bil = lambda t: F.interpolate(t, scale_factor=4, mode="bilinear", align_corners=False)
    up_nn = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")
    norm = lambda t: t.pow(2).sum(1, keepdim=True).sqrt()
    with torch.inference_mode():
        f_c = up_bil(20 * flownet2.flownetc(x))
        w1 = fn.resample2d(x1, f_c)
        f_s1 = up_bil(20 * flownet2.flownets_1(torch.cat([x0, x1, w1, f_c / 20, norm(x0 - w1)], 1)))
        w2 = fn.resample2d(x1, f_s1)
        f_s2 = up_nn(20 * flownet2.flownets_2(torch.cat([x0, x1, w2, f_s1 / 20, norm(x0 - w2)], 1)))
        f_sd = up_nn(flownet2.flownets_d(x) / 20)
        fused_in = torch.cat([x0, f_sd, f_s2, norm(f_sd), norm(f_s2),
                              norm(x0 - fn.resample2d(x1, f_sd)), norm(x0 - fn.resample2d(x1, f_s2))], 1)
        want = flownet2.flownetfusion(fused_in)
        got = fn.estimate(flownet2, a, b)
    assert got.shape == (2, 2, 64, 64) and torch.isfinite(got).all()
    assert want.abs().max() > 0 and not torch.allclose(got[0], got[1])
    torch.testing.assert_close(got[1:], want, rtol=1e-4, atol=1e-5)


def test_odd_sizes_are_resized_to_multiples_of_64_and_flow_rescaled():
    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # 1 px right, 1 px down at network size
            assert x.shape[-2:] == (64, 128)
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    flow = fn.estimate(Constant(), torch.zeros(1, 3, 40, 70), torch.zeros(1, 3, 40, 70))
    torch.testing.assert_close(flow[0, 0], torch.full((40, 70), 70 / 128))
    torch.testing.assert_close(flow[0, 1], torch.full((40, 70), 40 / 64))


def test_mkd_data_derive_with_a_random_official_file(tmp_path, flownet2):
    """The released container ({'epoch', 'state_dict', 'best_EPE'}), legacy (pre-zip) serialisation
    as the 2018 files; `mkd data derive -m flow -o method=flownet2 -o weights=FILE`."""
    weights = tmp_path / "FlowNet2_checkpoint.pth.tar"
    torch.save({"epoch": 0, "state_dict": flownet2.state_dict(), "best_EPE": 1e10}, weights,
               _use_new_zipfile_serialization=False)
    root = one_video(testing.tiny_dataset(tmp_path, classes=3, videos=1, frames=2, size=32))
    code, out, err = testing.run_cli("data", "derive", root, "-m", "flow", "-o", "method=flownet2",
                                     "-o", f"weights={weights}", "-o", "batch_size=8")
    assert code == 0, out + err
    images = sorted((root / "flow_l8").rglob("*.jpg"))
    assert len(images) == 2
    code, _, err = testing.run_cli("data", "derive", root, "-m", "flow", "-o", "method=flownet2",
                                   "-o", f"weights={tmp_path / 'nope.pth'}")
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err, err
