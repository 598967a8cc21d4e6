"""Multi-modal fusion of per-frame features ``{modality: (B, T, D)}`` -> ``(B, T, D)``.

:class:`MFM` is the hierarchical fusion of spec section 4 (``ThreeTRXShiftLoopTime``),
generalised from (rgb, depth, flow) to any M >= 2 modalities with rgb first:

* ``PE_m(x) = Dropout(LayerNorm(x + E_m[t]))``, a learnable table per modality;
* level 1: one M-modal transformer over the channel-concatenated modalities (d_model M*D,
  M heads by default, post-LN, batch_first) then Linear M*D -> D and dropout;
* level 2: ONE bi-modal transformer shared by every (rgb, x) pair, with its own rgb PE and
  one partner PE shared by all partners; the partner is rolled by ``-shift`` along time
  (rgb frame t meets partner frame t+shift, cyclically) in training *and* extraction (the
  original rolled flow only at extraction, spec 8 bug 3);
* output = level 1 + sum of the level-2 pair outputs.

The full-size MFM (D = 2048, 3 modalities, 2 layers) has about 0.55 B parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from mkdcore.errors import TrainingError


class TrainablePositionalEncoding(nn.Module):
    """``Dropout(LayerNorm(x + E[t]))`` with a learnable ``(max_len, dim)`` table."""

    def __init__(self, max_len: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.max_len:
            raise TrainingError(f"fusion: clips have {frames} frames but seq_len is {self.max_len}")
        positions = torch.arange(frames, device=x.device)
        return self.dropout(self.norm(x + self.table(positions)[None]))


class TransformerFusion(nn.Module):
    """PE per input, transformer over the channel concatenation, Linear back to ``dim``."""

    def __init__(self, inputs: int, dim: int, seq_len: int, layers: int, heads: int | None, ff_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.pes = nn.ModuleList(TrainablePositionalEncoding(seq_len, dim, dropout) for _ in range(inputs))
        layer = nn.TransformerEncoderLayer(
            d_model=inputs * dim,
            nhead=heads or inputs,
            dim_feedforward=ff_dim or dim,
            dropout=dropout,
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.Linear(inputs * dim, dim), nn.Dropout(dropout))

    def forward(self, xs: list[torch.Tensor], pe_index: list[int] | None = None) -> torch.Tensor:
        pe_index = pe_index or list(range(len(xs)))
        joint = torch.cat([self.pes[i](x) for i, x in zip(pe_index, xs)], dim=-1)
        return self.out(self.encoder(joint))


def _ordered(features: dict[str, torch.Tensor], modalities: list[str]) -> list[torch.Tensor]:
    if set(features) != set(modalities):
        raise TrainingError(f"fusion: expected modalities {modalities}, got {list(features)}")
    return [features[m] for m in modalities]


class MFM(nn.Module):
    """Hierarchical multi-modal fusion (M-modal + shared shifted rgb-x bi-modal)."""

    def __init__(
        self,
        modalities: list[str] = ("rgb", "depth", "flow"),
        dim: int = 2048,
        seq_len: int = 8,
        layers: int = 2,
        heads: int | None = None,
        pair_heads: int | None = None,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        shift: int = 1,
    ) -> None:
        super().__init__()
        self.modalities, self.dim, self.shift = list(modalities), dim, shift
        if len(self.modalities) < 2 or self.modalities[0] != "rgb":
            raise TrainingError(f"mfm: needs rgb first and at least one more modality, got {self.modalities}")
        self.multi = TransformerFusion(len(self.modalities), dim, seq_len, layers, heads, ff_dim, dropout)
        self.pair = TransformerFusion(2, dim, seq_len, layers, pair_heads, ff_dim, dropout)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        xs = _ordered(features, self.modalities)
        rgb = xs[0]
        fused = self.multi(xs)
        for partner in xs[1:]:
            fused = fused + self.pair([rgb, torch.roll(partner, shifts=-self.shift, dims=1)])
        return fused


class MeanFusion(nn.Module):
    """Baseline: the mean of the modality features (no parameters)."""

    def __init__(self, modalities: list[str] = ("rgb", "depth", "flow"), dim: int = 2048) -> None:
        super().__init__()
        self.modalities, self.dim = list(modalities), dim

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(_ordered(features, self.modalities)).mean(0)


class ConcatFusion(nn.Module):
    """Baseline: channel concatenation then Linear M*D -> D."""

    def __init__(self, modalities: list[str] = ("rgb", "depth", "flow"), dim: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.modalities, self.dim = list(modalities), dim
        self.out = nn.Sequential(nn.Linear(len(self.modalities) * dim, dim), nn.Dropout(dropout))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(torch.cat(_ordered(features, self.modalities), dim=-1))
