"""AdaBins (Bhat et al., CVPR 2021) re-implemented, loading the official ``AdaBins_{nyu,kitti}.pt``.

``UnetAdaptiveBins``: an EfficientNet-B5 encoder, a U-Net decoder and the mini-ViT
adaptive-bins head. Facts are from ``../shared/fixtures/expert-networks/README.md``
section 1 (the fact sheet); the official code is GPL-3.0 and none of it is used here.

Encoder and key map. The official model wraps gen-efficientnet's
``tf_efficientnet_b5_ap`` as ``encoder.original_model``; timm's ``tf_efficientnet_b5``
has the identical state dict (names, order, shapes), less its classifier, which timm
drops with ``num_classes=0``. So the only differences between the file and this module
are the file's own (:func:`official_keys_to_ours`):

* every stored key starts with ``module.`` (DistributedDataParallel) -> removed;
* ``adaptive_bins_layer.embedding_conv.*`` -> ``adaptive_bins_layer.conv3x3.*``;
* ``adaptive_bins_layer.patch_transformer.embedding_encoder.*`` ->
  ``adaptive_bins_layer.patch_transformer.embedding_convPxP.*`` (older names the
  official loader also maps; either spelling is accepted).

What timm does *not* give is the official forward of the encoder, which taps five
intermediate maps (fact sheet 1.2): the outputs of ``blocks.0``, ``blocks.1``,
``blocks.2``, ``blocks.4`` and of ``conv_head`` *before* ``bn2`` (so ``bn2`` is loaded
but unused). :class:`Encoder` runs timm's modules in that order explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mkdcore.errors import ConfigError
from mkdcore.modalities.checkpoints import load_strict, read_state_dict, strip_prefix

HINT = ("download AdaBins_nyu.pt or AdaBins_kitti.pt from the Google Drive folder linked in "
        "shariqfarooq123/AdaBins's README (see docs/modalities.md for the licence) and set the depth option weights=<that file>")
#: ImageNet statistics: AdaBins normalises with these, not the encoder's 0.5/0.5 (fact sheet 1.2, 1.3)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
N_BINS = 256
OLD_NAMES = {
    "adaptive_bins_layer.embedding_conv.": "adaptive_bins_layer.conv3x3.",
    "adaptive_bins_layer.patch_transformer.embedding_encoder.": "adaptive_bins_layer.patch_transformer.embedding_convPxP.",
}


@dataclass(frozen=True)
class DatasetSettings:
    """Per-weight-file settings (fact sheet 1.1 constructor table, 1.3 resolutions)."""

    min_depth: float
    max_depth: float
    height: int
    width: int


DATASETS = {
    "nyu": DatasetSettings(0.001, 10.0, 480, 640),  # full NYU frames at test time
    "kitti": DatasetSettings(0.001, 80.0, 352, 1216),  # the KITTI "KB crop"
}


def patches(height: int, width: int) -> int:
    """S, the number of 16x16 patches on the half-resolution decoder map (must be 129..500)."""
    return (-(-height // 2) // 16) * (-(-width // 2) // 16)


def check_size(height: int, width: int) -> None:
    s = patches(height, width)
    if not 129 <= s <= 500:
        raise ConfigError(f"depth: AdaBins input {height}x{width} has {s} patches of 16 px on its half-resolution map; "
                          f"the network needs 129 to 500 (e.g. 480x640 gives 300, 352x1216 gives 418)")


class Encoder(nn.Module):
    """timm's ``tf_efficientnet_b5`` (no classifier) with AdaBins' five taps."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.original_model = timm.create_model("tf_efficientnet_b5", pretrained=False, num_classes=0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.original_model
        x = m.bn1(m.conv_stem(x))
        taps = []
        for i, stage in enumerate(m.blocks):
            x = stage(x)
            if i in (0, 1, 2, 4):
                taps.append(x)
        taps.append(m.conv_head(x))  # before bn2 and its activation, as the official list index 11
        return taps


class UpSampleBN(nn.Module):
    def __init__(self, skip_input: int, output_features: int) -> None:
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(skip_input, output_features, 3, 1, 1), nn.BatchNorm2d(output_features), nn.LeakyReLU(),
            nn.Conv2d(output_features, output_features, 3, 1, 1), nn.BatchNorm2d(output_features), nn.LeakyReLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, skip], 1))


class DecoderBN(nn.Module):
    def __init__(self, features: int = 2048, num_classes: int = 128) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(features, features, 1, 1, padding=1)  # padding=1 on a 1x1 conv: +2 px, as the original
        self.up1 = UpSampleBN(features + 176, features // 2)
        self.up2 = UpSampleBN(features // 2 + 64, features // 4)
        self.up3 = UpSampleBN(features // 4 + 40, features // 8)
        self.up4 = UpSampleBN(features // 8 + 24, features // 16)
        self.conv3 = nn.Conv2d(features // 16, num_classes, 3, 1, 1)

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        b0, b1, b2, b4, head = taps
        x = self.up1(self.conv2(head), b4)
        x = self.up2(x, b2)
        x = self.up3(x, b1)
        return self.conv3(self.up4(x, b0))


class PatchTransformerEncoder(nn.Module):
    def __init__(self, in_channels: int = 128, patch_size: int = 16, embedding_dim: int = 128, num_heads: int = 4) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(embedding_dim, num_heads, dim_feedforward=1024)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.embedding_convPxP = nn.Conv2d(in_channels, embedding_dim, patch_size, patch_size, 0)
        self.positional_encodings = nn.Parameter(torch.rand(500, embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding_convPxP(x).flatten(2)  # (N, E, S), row-major patches
        emb = emb + self.positional_encodings[: emb.shape[2]].T.unsqueeze(0)
        return self.transformer_encoder(emb.permute(2, 0, 1))  # (S, N, E)


class MViT(nn.Module):
    """The adaptive-bins head: normalised bin widths (N, 256) and range-attention maps (N, 128, h, w)."""

    def __init__(self, in_channels: int = 128, n_query_channels: int = 128, dim_out: int = N_BINS, embedding_dim: int = 128) -> None:
        super().__init__()
        self.n_query_channels = n_query_channels
        self.patch_transformer = PatchTransformerEncoder(in_channels, 16, embedding_dim, 4)
        self.conv3x3 = nn.Conv2d(in_channels, embedding_dim, 3, 1, 1)
        self.regressor = nn.Sequential(nn.Linear(embedding_dim, 256), nn.LeakyReLU(), nn.Linear(256, 256), nn.LeakyReLU(),
                                       nn.Linear(256, dim_out))

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch_transformer(u)
        queries = tokens[1 : self.n_query_channels + 1].permute(1, 0, 2)  # (N, Q, E)
        ranges = torch.einsum("nchw,nqc->nqhw", self.conv3x3(u), queries)  # plain dot product
        y = torch.relu(self.regressor(tokens[0])) + 0.1  # norm='linear'
        return y / y.sum(1, keepdim=True), ranges


class UnetAdaptiveBins(nn.Module):
    """``forward(x normalised (N, 3, H, W)) -> (bin_edges (N, 257), depth (N, 1, H/2, W/2) metres)``."""

    def __init__(self, min_val: float = 0.001, max_val: float = 10.0) -> None:
        super().__init__()
        self.min_val, self.max_val = min_val, max_val
        self.encoder = Encoder()
        self.decoder = DecoderBN()
        self.adaptive_bins_layer = MViT()
        self.conv_out = nn.Sequential(nn.Conv2d(128, N_BINS, 1), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        widths_normed, ranges = self.adaptive_bins_layer(self.decoder(self.encoder(x)))
        return bins_to_depth(widths_normed, self.conv_out(ranges), self.min_val, self.max_val)


def bins_to_depth(widths_normed: torch.Tensor, probs: torch.Tensor, min_val: float, max_val: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin edges ``(N, 257)`` m and depth ``(N, 1, h, w)`` m: the probability-weighted sum of the bin centres."""
    widths = F.pad((max_val - min_val) * widths_normed, (1, 0), value=min_val)
    edges = torch.cumsum(widths, 1)
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    return edges, (probs * centres[:, :, None, None]).sum(1, keepdim=True)


def official_keys_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's keys -> this module's: no ``module.`` prefix, the two older conv names renamed."""
    out = {}
    for key, value in strip_prefix(state).items():
        for old, new in OLD_NAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def load_adabins(path: Path, dataset: str = "nyu") -> UnetAdaptiveBins:
    """The network of an official AdaBins file, loaded strictly, eval mode, on CPU."""
    label = "depth: AdaBins weights"
    state = official_keys_to_ours(read_state_dict(path, label, ("model",), HINT))
    d = DATASETS[dataset]
    return load_strict(lambda: UnetAdaptiveBins(d.min_depth, d.max_depth), state, f"{label} {path}", HINT)  # type: ignore[return-value]


def predict(net: UnetAdaptiveBins, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """infer.py's post-processing (fact sheet 1.5): clipped depth, optionally averaged with the
    flipped pass, upsampled (bilinear, align_corners=True) to the input size and clamped.
    ``x`` normalised ``(N, 3, H, W)`` -> metres ``(N, H, W)``."""
    lo, hi = net.min_val, net.max_val
    pred = net(x)[1].clamp(lo, hi)
    if flip:
        pred = 0.5 * (pred + net(torch.flip(x, [3]))[1].clamp(lo, hi).flip(3))
    pred = F.interpolate(pred, size=x.shape[-2:], mode="bilinear", align_corners=True)
    return torch.nan_to_num(pred, nan=lo, posinf=hi).clamp(lo, hi)[:, 0]


class AdaBinsDepth:
    """The estimator of ``depth`` with ``backend=adabins``: ``uint8 (N, H, W, 3) -> metres (N, H, W)``."""

    def __init__(self, weights: Path | None, dataset: str = "nyu", size: tuple[int, int] | None = None,
                 flip: bool = True, batch_size: int = 4) -> None:
        self.weights = weights
        self.dataset = dataset
        d = DATASETS[dataset]
        self.size = size or (d.height, d.width)
        self.flip = flip
        self.batch_size = batch_size
        self.device = "cpu"
        self._net: UnetAdaptiveBins | None = None

    def setup(self, device: str) -> None:
        if self.weights is None:
            raise ConfigError(f"depth: backend 'adabins' needs the option weights; {HINT}")
        check_size(*self.size)
        self._net = load_adabins(Path(self.weights), self.dataset).to(device)
        self.device = device

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self._net is None:
            self.setup(self.device)
        assert self._net is not None
        n, h, w, _ = frames.shape
        mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[s : s + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                if tuple(x.shape[-2:]) != self.size:
                    x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
                depth = predict(self._net, (x - mean) / std, self.flip)
                if tuple(depth.shape[-2:]) != (h, w):
                    depth = F.interpolate(depth[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
                out.append(depth.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)
