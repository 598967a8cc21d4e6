"""FlowNet 2.0 (Ilg et al., CVPR 2017) in pure PyTorch, loading NVIDIA's converted weights.

The official PyTorch port (NVIDIA/flownet2-pytorch, Apache-2.0) needs three CUDA
extensions; here they are torch ops (:func:`correlation`, :func:`resample2d`,
:func:`channel_norm`), so the network runs on CPU and on any GPU with no build step. The
module tree and parameter names are those of the official classes, so the released
files (``FlowNet2_checkpoint.pth.tar`` and the C, S, SD, CS, CSS sub-model files) load
strictly; which network a file holds is told by its keys (:func:`detect_variant`).
Facts used here are from ``../shared/fixtures/expert-networks/README.md`` section 2
(the fact sheet); section numbers below refer to it.

Input contract (2.2): two RGB frames with raw 0..255 values; per sample and colour
channel the mean over both frames is subtracted and the result divided by 255; sides
must be multiples of 64. Output: flow ``(B, 2, H, W)`` in pixels, channel 0 = dx
(right), 1 = dy (down), mapping frame 0's pixels into frame 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mkdcore.modalities.checkpoints import (
    any_key,
    load_strict,
    read_state_dict,
    strip_prefix,
)

#: sub-networks predict flow / 20 (2.2)
DIV_FLOW = 20.0
#: both sides of the network input must be multiples of this (conv6 is at 1/64)
SIZE_MULTIPLE = 64
HINT = ("download the converted Caffe weights linked in NVIDIA/flownet2-pytorch's README "
        "(FlowNet2_checkpoint.pth.tar; research use, see docs/modalities.md) and set the flow option weights=<that file>")


# --- the three CUDA operations, as torch ops (fact sheet 2.5) ---------------------------

def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int = 20, stride2: int = 2) -> torch.Tensor:
    """FlowNetC's correlation layer (kernel 1, stride1 1, pad = max displacement).

    ``out[b, (j+r)*D + (i+r), y, x] = sum_c f1[b,c,y,x] * f2[b,c,y+stride2*j,x+stride2*i] / C``
    with ``r = max_displacement // stride2``, ``D = 2r+1`` (vertical displacement is the
    slow index) and ``f2`` zero outside the map. Output ``(B, D*D, H, W)``.
    """
    b, c, h, w = f1.shape
    r = max_displacement // stride2
    d = 2 * r + 1
    f2p = F.pad(f2, (max_displacement,) * 4)
    out = f1.new_empty(b, d * d, h, w)
    for j in range(d):
        oy = j * stride2
        for i in range(d):
            ox = i * stride2
            out[:, j * d + i] = (f1 * f2p[:, :, oy : oy + h, ox : ox + w]).sum(1)
    return out / c


def resample2d(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear warp: ``out[b,c,y,x] = image[b, c, y + flow[b,1,y,x], x + flow[b,0,y,x]]``.

    Out-of-image corners are clamped to the border (border replication, not zeros), as
    the CUDA kernel does; the output has the flow's height and width.
    """
    _, _, h_in, w_in = image.shape
    h, w = flow.shape[-2:]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w_in - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h_in - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over channels, ``(B, C, H, W) -> (B, 1, H, W)``, no epsilon."""
    return torch.sqrt((x * x).sum(1, keepdim=True))


def upsample_bilinear4(x: torch.Tensor) -> torch.Tensor:
    """``nn.Upsample(scale_factor=4, mode='bilinear')`` as of PyTorch >= 0.4 (align_corners False)."""
    return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


def upsample_nearest4(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=4, mode="nearest")


# --- building blocks (fact sheet 2.4), named as the official modules ---------------------

def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=True), nn.LeakyReLU(0.1))


def deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True), nn.LeakyReLU(0.1))


def i_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=True))


def predict_flow(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 2, 3, 1, 1, bias=True)


def up_flow(bias: bool = True) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=bias)


class _Decoder(nn.Module):
    """The C/S decoder (levels 6..2): shared by FlowNetC and FlowNetS."""

    def __init__(self, up_bias: bool) -> None:
        super().__init__()
        self.deconv5, self.deconv4, self.deconv3, self.deconv2 = deconv(1024, 512), deconv(1026, 256), deconv(770, 128), deconv(386, 64)
        self.predict_flow6, self.predict_flow5, self.predict_flow4 = predict_flow(1024), predict_flow(1026), predict_flow(770)
        self.predict_flow3, self.predict_flow2 = predict_flow(386), predict_flow(194)
        self.upsampled_flow6_to_5, self.upsampled_flow5_to_4 = up_flow(up_bias), up_flow(up_bias)
        self.upsampled_flow4_to_3, self.upsampled_flow3_to_2 = up_flow(up_bias), up_flow(up_bias)

    def decode(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor, c6: torch.Tensor) -> torch.Tensor:
        """flow2 (1/4 resolution, in units of 20 px) from the encoder's skip maps."""
        flow6 = self.predict_flow6(c6)
        concat5 = torch.cat([c5, self.deconv5(c6), self.upsampled_flow6_to_5(flow6)], 1)
        flow5 = self.predict_flow5(concat5)
        concat4 = torch.cat([c4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)], 1)
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat([c3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)], 1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat([c2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)], 1)
        return self.predict_flow2(concat2)


class FlowNetC(_Decoder):
    """FlowNetC: a shared 3-conv tower per frame, correlation at 1/8, then the decoder."""

    def __init__(self) -> None:
        super().__init__(up_bias=True)
        self.conv1, self.conv2, self.conv3 = conv(3, 64, 7, 2), conv(64, 128, 5, 2), conv(128, 256, 5, 2)
        self.conv_redir = conv(256, 32, 1, 1)
        self.conv3_1 = conv(473, 256)
        self.conv4, self.conv4_1 = conv(256, 512, 3, 2), conv(512, 512)
        self.conv5, self.conv5_1 = conv(512, 512, 3, 2), conv(512, 512)
        self.conv6, self.conv6_1 = conv(512, 1024, 3, 2), conv(1024, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised frames ``(B, 6, H, W)`` -> flow2 ``(B, 2, H/4, W/4)`` / 20."""
        tower = torch.cat([x[:, :3], x[:, 3:]], 0)  # both frames through the shared tower at once
        c2 = self.conv2(self.conv1(tower))
        c3 = self.conv3(c2)
        c2a, (c3a, c3b) = c2[: x.shape[0]], c3.chunk(2, 0)
        corr = F.leaky_relu(correlation(c3a, c3b), 0.1)
        c3_1 = self.conv3_1(torch.cat([self.conv_redir(c3a), corr], 1))
        c4 = self.conv4_1(self.conv4(c3_1))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        return self.decode(c2a, c3_1, c4, c5, c6)


class FlowNetS(_Decoder):
    """FlowNetS: a plain encoder on stacked inputs (12 channels in FlowNet2, 6 alone)."""

    def __init__(self, in_channels: int = 12) -> None:
        super().__init__(up_bias=False)
        self.conv1, self.conv2, self.conv3 = conv(in_channels, 64, 7, 2), conv(64, 128, 5, 2), conv(128, 256, 5, 2)
        self.conv3_1 = conv(256, 256)
        self.conv4, self.conv4_1 = conv(256, 512, 3, 2), conv(512, 512)
        self.conv5, self.conv5_1 = conv(512, 512, 3, 2), conv(512, 512)
        self.conv6, self.conv6_1 = conv(512, 1024, 3, 2), conv(1024, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.conv2(self.conv1(x))
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        return self.decode(c2, c3, c4, c5, c6)


class FlowNetSD(nn.Module):
    """FlowNetSD (small displacements): 3x3 convs from full resolution, inter_convs in the decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(6, 64)
        self.conv1, self.conv1_1 = conv(64, 64, 3, 2), conv(64, 128)
        self.conv2, self.conv2_1 = conv(128, 128, 3, 2), conv(128, 128)
        self.conv3, self.conv3_1 = conv(128, 256, 3, 2), conv(256, 256)
        self.conv4, self.conv4_1 = conv(256, 512, 3, 2), conv(512, 512)
        self.conv5, self.conv5_1 = conv(512, 512, 3, 2), conv(512, 512)
        self.conv6, self.conv6_1 = conv(512, 1024, 3, 2), conv(1024, 1024)
        self.deconv5, self.deconv4, self.deconv3, self.deconv2 = deconv(1024, 512), deconv(1026, 256), deconv(770, 128), deconv(386, 64)
        self.inter_conv5, self.inter_conv4 = i_conv(1026, 512), i_conv(770, 256)
        self.inter_conv3, self.inter_conv2 = i_conv(386, 128), i_conv(194, 64)
        self.predict_flow6, self.predict_flow5, self.predict_flow4 = predict_flow(1024), predict_flow(512), predict_flow(256)
        self.predict_flow3, self.predict_flow2 = predict_flow(128), predict_flow(64)
        self.upsampled_flow6_to_5, self.upsampled_flow5_to_4 = up_flow(), up_flow()
        self.upsampled_flow4_to_3, self.upsampled_flow3_to_2 = up_flow(), up_flow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1_1(self.conv1(self.conv0(x)))
        c2 = self.conv2_1(self.conv2(c1))
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        flow6 = self.predict_flow6(c6)
        concat5 = torch.cat([c5, self.deconv5(c6), self.upsampled_flow6_to_5(flow6)], 1)
        flow5 = self.predict_flow5(self.inter_conv5(concat5))
        concat4 = torch.cat([c4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)], 1)
        flow4 = self.predict_flow4(self.inter_conv4(concat4))
        concat3 = torch.cat([c3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)], 1)
        flow3 = self.predict_flow3(self.inter_conv3(concat3))
        concat2 = torch.cat([c2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)], 1)
        return self.predict_flow2(self.inter_conv2(concat2))


class FlowNetFusion(nn.Module):
    """The fusion net: 11 input channels, full-resolution output (flow0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(11, 64)
        self.conv1, self.conv1_1 = conv(64, 64, 3, 2), conv(64, 128)
        self.conv2, self.conv2_1 = conv(128, 128, 3, 2), conv(128, 128)
        self.deconv1, self.deconv0 = deconv(128, 32), deconv(162, 16)
        self.inter_conv1, self.inter_conv0 = i_conv(162, 32), i_conv(82, 16)
        self.predict_flow2, self.predict_flow1, self.predict_flow0 = predict_flow(128), predict_flow(32), predict_flow(16)
        self.upsampled_flow2_to_1, self.upsampled_flow1_to_0 = up_flow(), up_flow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        c1 = self.conv1_1(self.conv1(c0))
        c2 = self.conv2_1(self.conv2(c1))
        flow2 = self.predict_flow2(c2)
        concat1 = torch.cat([c1, self.deconv1(c2), self.upsampled_flow2_to_1(flow2)], 1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat([c0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)], 1)
        return self.predict_flow0(self.inter_conv0(concat0))


# --- the released models: normalised 6-channel pair -> flow in px at full resolution -----

def _refine(net: FlowNetS, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """One FlowNetS stage of the large-displacement branch (2.3, steps 2-3): flow2 / 20 at 1/4."""
    warped = resample2d(x[:, 3:], flow)
    error = channel_norm(x[:, :3] - warped)
    return net(torch.cat([x, warped, flow / DIV_FLOW, error], 1))


class FlowNet2C(FlowNetC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear4(super().forward(x) * DIV_FLOW)


class FlowNet2S(FlowNetS):
    def __init__(self) -> None:
        super().__init__(in_channels=6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear4(super().forward(x) * DIV_FLOW)


class FlowNet2SD(FlowNetSD):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear4(super().forward(x) * DIV_FLOW)


class FlowNet2CS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flownetc, self.flownets_1 = FlowNetC(), FlowNetS()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flow_c = upsample_bilinear4(self.flownetc(x) * DIV_FLOW)
        return upsample_bilinear4(_refine(self.flownets_1, x, flow_c) * DIV_FLOW)


class FlowNet2CSS(FlowNet2CS):
    def __init__(self) -> None:
        super().__init__()
        self.flownets_2 = FlowNetS()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flow_s1 = super().forward(x)
        return upsample_nearest4(_refine(self.flownets_2, x, flow_s1) * DIV_FLOW)


class FlowNet2(FlowNet2CSS):
    """The full stack (2.3): C -> S -> S, SD, fused."""

    def __init__(self) -> None:
        super().__init__()
        self.flownets_d, self.flownetfusion = FlowNetSD(), FlowNetFusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[:, :3], x[:, 3:]
        flow_s2 = super().forward(x)  # large-displacement branch, nearest x4
        norm_s2 = channel_norm(flow_s2)
        err_s2 = channel_norm(x0 - resample2d(x1, flow_s2))
        # the original divides here (not multiplies), copying Caffe on purpose (2.3 step 4)
        flow_sd = upsample_nearest4(self.flownets_d(x) / DIV_FLOW)
        norm_sd = channel_norm(flow_sd)
        err_sd = channel_norm(x0 - resample2d(x1, flow_sd))
        return self.flownetfusion(torch.cat([x0, flow_sd, flow_s2, norm_sd, norm_s2, err_sd, err_s2], 1))


#: file variant -> class; file names in the fact sheet, table 2.1
VARIANTS: dict[str, Callable[[], nn.Module]] = {
    "FlowNet2": FlowNet2, "FlowNet2-CSS": FlowNet2CSS, "FlowNet2-CS": FlowNet2CS,
    "FlowNet2-C": FlowNet2C, "FlowNet2-SD": FlowNet2SD, "FlowNet2-S": FlowNet2S,
}


def detect_variant(state: dict[str, Any]) -> str:
    """Which released network a state dict holds, told by its keys (None: not FlowNet2)."""
    if any_key(state, ("flownetfusion.", "flownets_d.")):
        return "FlowNet2"
    if any_key(state, ("flownets_2.",)):
        return "FlowNet2-CSS"
    if any_key(state, ("flownetc.", "flownets_1.")):
        return "FlowNet2-CS"
    if any_key(state, ("conv_redir.",)):
        return "FlowNet2-C"
    if any_key(state, ("inter_conv", "conv0.")):
        return "FlowNet2-SD"
    if any_key(state, ("conv1.0.", "conv6_1.0.")):
        return "FlowNet2-S"
    return ""


def load_flownet2(path: Path, label: str = "flow: FlowNet2 weights") -> tuple[nn.Module, str]:
    """The network of an official FlowNet2 file (any of the 7 releases), loaded strictly, eval mode, on CPU."""
    from mkdcore.errors import ConfigError

    state = strip_prefix(read_state_dict(path, label, ("state_dict",), HINT))
    variant = detect_variant(state)
    if not variant:
        raise ConfigError(f"{label} {path} is not a FlowNet2 checkpoint (no key of FlowNet2, -C, -S, -SD, -CS or -CSS, "
                          f"e.g. {next(iter(state))}); {HINT}")
    return load_strict(VARIANTS[variant], state, f"{label} {path} ({variant})", HINT), variant


def normalise_pair(src: torch.Tensor, dst: torch.Tensor, rgb_max: float = 255.0) -> torch.Tensor:
    """Frames ``(B, 3, H, W)`` with raw 0..255 values -> the network's 6-channel input (2.2)."""
    both = torch.stack([src, dst], 2)  # (B, 3, 2, H, W) as the original's input
    mean = both.reshape(both.shape[0], 3, -1).mean(-1).view(-1, 3, 1, 1, 1)
    x = (both - mean) / rgb_max
    return torch.cat([x[:, :, 0], x[:, :, 1]], 1)


def network_size(h: int, w: int) -> tuple[int, int]:
    """The input size the frames are resized to: each side rounded up to a multiple of 64."""
    up = lambda n: max(SIZE_MULTIPLE, -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return up(h), up(w)


def estimate(net: nn.Module, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Flow ``(B, 2, H, W)`` px between float 0..255 frames ``(B, 3, H, W)`` of any size.

    Frames are resized (bilinear) to the next multiples of 64, so every pixel gets a
    flow and no padded border enters the correlation; the flow is resized back and its
    components rescaled by the width and height ratios.
    """
    h, w = src.shape[-2:]
    nh, nw = network_size(h, w)
    if (nh, nw) != (h, w):
        src = F.interpolate(src, size=(nh, nw), mode="bilinear", align_corners=False)
        dst = F.interpolate(dst, size=(nh, nw), mode="bilinear", align_corners=False)
    flow = net(normalise_pair(src, dst))
    if (nh, nw) != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        flow = flow * torch.tensor([w / nw, h / nh], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return flow


class FlowNet2Flow:
    """The estimator of ``flow`` with ``method=flownet2``: uint8 RGB stacks -> flow px, batched."""

    def __init__(self, weights: Path | None, batch_size: int = 8) -> None:
        self.weights = weights
        self.batch_size = batch_size
        self.device = "cpu"
        self.variant = ""
        self._net: nn.Module | None = None

    def setup(self, device: str) -> None:
        from mkdcore.errors import ConfigError

        if self.weights is None:
            raise ConfigError(f"flow: method 'flownet2' needs the option weights; {HINT}")
        net, self.variant = load_flownet2(Path(self.weights))
        self.device = device
        self._net = net.to(device)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB pairs -> ``(N, H, W, 2)`` float32 px."""
        if self._net is None:
            self.setup(self.device)
        assert self._net is not None
        out = []
        with torch.inference_mode():
            for s in range(0, len(src), self.batch_size):
                a, b = (torch.from_numpy(np.ascontiguousarray(stack[s : s + self.batch_size])).to(self.device)
                        .permute(0, 3, 1, 2).float() for stack in (src, dst))
                out.append(estimate(self._net, a, b).permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)
