"""timm frame encoders: trunk -> pooling -> none / one / two Linear projections.

The trunk is ``timm.create_model(name, pretrained=False, num_classes=0)`` used through
``forward_features`` only (never a download). For timm's MobileNetV3 this is
``conv_stem, bn1, blocks``, i.e. exactly torchvision's ``mobilenet_v3_*().features`` that the
paper used (960 channels for Large, 576 for Small at 7x7, spec 3.2); timm's ``conv_head``
(960->1280, in the classifier head) is removed so it neither counts as a parameter nor runs.

Pooling (spec 3.1): ``maxmean`` = 4x4 adaptive max pool, then the mean over the 16 cells
(the original students); ``avg`` = global average pooling (the teacher ResNet-50s). Token
outputs of transformer trunks ``(N, L, C)`` are averaged over tokens for either pooling.

Projection: ``none`` (``out_dim`` = trunk channels), ``1fc`` (Linear C->out_dim), ``2fc``
(two independent Linear C->out_dim giving ``features`` and ``features_2``: the Lite-MKD
student's fc1/fc2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mkdcore.errors import PluginError

Pooling = Literal["maxmean", "avg"]
Projection = Literal["none", "1fc", "2fc"]


def create_trunk(variant: str) -> nn.Module:
    """A timm model without classifier, used through ``forward_features``."""
    import timm

    try:
        model = timm.create_model(variant, pretrained=False, num_classes=0)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise PluginError(f"backbone timm:{variant}: {str(exc).splitlines()[0]}") from None
    if type(model).__name__ == "MobileNetV3":
        # conv_head belongs to timm's classifier head (after pooling), not to the trunk.
        model.conv_head = nn.Identity()
        if hasattr(model, "norm_head"):
            model.norm_head = nn.Identity()
    return model


def pool_features(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(N, C, h, w)`` (or tokens ``(N, L, C)``) -> ``(N, C)``."""
    if x.dim() == 3:
        return x.mean(1)
    if pooling == "maxmean":
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return _maxmean_by_bins(x)  # ONNX has no adaptive max pool; same windows, same values
        return F.adaptive_max_pool2d(x, (4, 4)).flatten(2).mean(-1)
    return x.mean(dim=(2, 3))


def _maxmean_by_bins(x: torch.Tensor, cells: int = 4) -> torch.Tensor:
    """``adaptive_max_pool2d(x, cells)`` then the mean, written as slices (the windows
    of adaptive pooling: ``floor(i n / c) .. ceil((i+1) n / c)``) for exported graphs."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    rows = [(i * h // cells, -(-(i + 1) * h // cells)) for i in range(cells)]
    cols = [(j * w // cells, -(-(j + 1) * w // cells)) for j in range(cells)]
    maxima = [x[..., a:b, c:d].amax(dim=(-2, -1)) for a, b in rows for c, d in cols]
    return torch.stack(maxima, dim=-1).mean(-1)


class TimmBackbone(nn.Module):
    """Frames ``(N, 3, H, W)`` -> ``{"features": (N, D)[, "features_2": (N, D)]}``."""

    def __init__(
        self,
        variant: str = "resnet18",
        pooling: Pooling = "maxmean",
        projection: Projection = "none",
        out_dim: int = 2048,
        pretrained: str | Path | None = None,
        channels_last: bool = False,
        bn_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.variant, self.pooling, self.projection = variant, pooling, projection
        self.channels_last = channels_last
        self.trunk = create_trunk(variant)
        if bn_eps is not None:  # torchvision's MobileNetV3 normalises with eps 1e-3, timm with 1e-5
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eps = bn_eps
        if pretrained:
            from mkdcore.models.weights import load_trunk_weights

            load_trunk_weights(self.trunk, pretrained)
        channels = int(self.trunk.num_features)
        self.trunk_dim = channels
        self.branches = 2 if projection == "2fc" else 1
        if projection == "none":
            self.proj_1 = nn.Identity()
            self.out_dim = channels
        else:
            self.proj_1 = nn.Linear(channels, out_dim)
            self.out_dim = out_dim
        self.proj_2 = nn.Linear(channels, out_dim) if projection == "2fc" else None
        if channels_last:
            self.trunk = self.trunk.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        pooled = pool_features(self.trunk.forward_features(frames), self.pooling)
        out = {"features": self.proj_1(pooled)}
        if self.proj_2 is not None:
            out["features_2"] = self.proj_2(pooled)
        return out
