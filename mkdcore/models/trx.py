"""TRX: the temporal-relational cross-transformer few-shot head (Perrett et al., CVPR 2021).

One :class:`TemporalCrossTransformer` per tuple cardinality; :class:`TRXHead` averages their
logits, as the reference TRX does. Facts kept from the reference (spec 3.3): fixed
sinusoidal positional encoding scaled by ``pe_scale`` with ``max_len = int(1.5 * seq_len)``
then dropout; ordered frame tuples ``i < j (< k)``; keys ``LayerNorm(W_k x)``, values
``W_v x`` (no norm); a joint softmax over *all* support tuples of a class; the distance is
``||v_q - P_c||_F^2 / n_tuples`` and the logit its negative.

Unlike the reference, nothing loops over classes or queries: the joint softmax over the
tuples of class ``c`` is a softmax over all support tuples with the other classes' entries
masked to ``-inf``. That also makes unequal shots per class, any way/shot/query/frame count
and any device work, and keeps all shapes data-independent (the profiler runs on ``meta``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from mkdcore.models.relations import infer_way, label_one_hot, support_relations


def sinusoidal_table(length: int, dim: int, scale: float) -> torch.Tensor:
    """``(length, dim)`` sin/cos table as in "Attention is all you need", times ``scale``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div_term) * scale
    table[:, 1::2] = torch.cos(position * div_term[: dim // 2]) * scale
    return table


class SinusoidalPE(nn.Module):
    """Adds the fixed scaled sinusoidal table to every frame, then dropout."""

    def __init__(self, dim: int, max_len: int, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.scale = dim, scale
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, dim, scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-2]
        table = self.pe
        if frames > table.shape[0]:  # longer clips than planned: same formula, extended
            table = sinusoidal_table(frames, self.dim, self.scale)
        return self.dropout(x + table[:frames].to(device=x.device, dtype=x.dtype))


class TemporalCrossTransformer(nn.Module):
    """TRX for one tuple cardinality, vectorised over classes and queries."""

    def __init__(self, in_dim: int, out_dim: int, cardinality: int, seq_len: int, dropout: float, pe_scale: float) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.cardinality, self.seq_len = in_dim, out_dim, cardinality, seq_len
        self.pe = SinusoidalPE(in_dim, int(seq_len * 1.5), pe_scale, dropout)
        self.k_linear = nn.Linear(in_dim * cardinality, out_dim)
        self.v_linear = nn.Linear(in_dim * cardinality, out_dim)
        self.norm_k = nn.LayerNorm(out_dim)

    def tuple_index(self, frames: int, device: torch.device) -> torch.Tensor:
        """``(n_tuples, cardinality)`` ordered frame indices ``i < j (< k)``."""
        combos = list(itertools.combinations(range(frames), self.cardinality))
        if not combos:
            raise ValueError(f"TRX cardinality {self.cardinality} needs at least {self.cardinality} frames, got {frames}")
        return torch.tensor(combos, dtype=torch.long, device=device)

    def _tuples(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(N, T, D) -> (N, n_tuples, c*D)``: the frames of each tuple, concatenated.

        A product with a one-hot frame selector, not ``x[:, index]``: the backward of
        advanced indexing is ``index_put_(accumulate=True)``, which on CPU (from 32768
        elements, with more than one thread) adds the gradients of a frame shared by
        several tuples with parallel atomic float adds, in an order set by thread
        scheduling; under CPU load two runs of the same training then diverged. A
        matmul's backward sums in a fixed order; the forward values are exact copies.
        """
        select = label_one_hot(index.reshape(-1), x.shape[1], x.dtype)  # (n_tuples * c, T)
        return (select @ x).reshape(x.shape[0], index.shape[0], self.cardinality * x.shape[-1])

    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, way: int) -> torch.Tensor:
        """Logits ``(Nq, W)``: minus the per-tuple squared distance to each class prototype."""
        k_s, v_s = self.encode(support)
        return self.score(k_s, v_s, support_labels, queries, way)

    def encode(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(N, n_tuples, D')`` of the frame tuples of ``clips`` ``(N, T, D)``.

        A support set's are the same for every query: :meth:`TRXHead.prepare` computes them
        once (at 224 px, 5-way 5-shot, they are 25x the work of one query's)."""
        index = self.tuple_index(clips.shape[1], clips.device)
        x = self._tuples(self.pe(clips), index)  # (N, n, c*D)
        return self.norm_k(self.k_linear(x)), self.v_linear(x)

    def score(self, k_s: torch.Tensor, v_s: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor,
              way: int) -> torch.Tensor:
        """Logits ``(Nq, W)`` of ``queries`` against the support keys and values of :meth:`encode`."""
        k_q, v_q = self.encode(queries)  # (Nq, n, D')
        n_support, n_tuples = k_s.shape[0], k_s.shape[1]
        scores = torch.einsum("qad,sbd->qasb", k_q, k_s) / math.sqrt(self.out_dim)  # (Nq, n, Ns, n)
        member = label_one_hot(support_labels, way, torch.bool).t()  # (W, Ns)
        masked = scores[:, :, None].masked_fill(~member[None, None, :, :, None], float("-inf"))  # (Nq, n, W, Ns, n)
        attn = masked.flatten(-2).softmax(-1)  # joint softmax over all tuples of each class
        prototypes = attn @ v_s.reshape(n_support * n_tuples, self.out_dim)  # (Nq, n, W, D')
        diff = v_q[:, :, None, :] - prototypes
        distance = diff.pow(2).sum(dim=(1, 3)) / n_tuples  # (Nq, W)
        return -distance


class TRXHead(nn.Module):
    """Few-shot head: mean over cardinalities of :class:`TemporalCrossTransformer` logits.

    ``forward`` returns ``{"logits": (Nq, W), "relations": (W, W-1)}``; logit column ``c``
    belongs to support label ``c``; ``relations`` are the support relations of the
    (un-encoded) support features, used by D2M.
    """

    def __init__(
        self,
        in_dim: int = 2048,
        out_dim: int = 1152,
        temporal_set: list[int] | tuple[int, ...] = (2, 3),
        seq_len: int = 8,
        dropout: float = 0.1,
        pe_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.temporal_set = in_dim, out_dim, list(temporal_set)
        self.transformers = nn.ModuleList(
            TemporalCrossTransformer(in_dim, out_dim, c, seq_len, dropout, pe_scale) for c in self.temporal_set
        )

    def forward(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, way: int | None = None
    ) -> dict[str, torch.Tensor]:
        way = infer_way(support_labels, way)
        logits = torch.stack([t(support, support_labels, queries, way) for t in self.transformers], dim=-1).mean(-1)
        return {"logits": logits, "relations": support_relations(support, support_labels, way)}

    def prepare(self, support: torch.Tensor, support_labels: torch.Tensor,
                way: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``queries -> logits (Nq, W)`` against a fixed support set whose tuple keys and
        values are computed once, here: what prediction calls per query. The logits are
        those of :meth:`forward` (the same operations, in the same order)."""
        way = infer_way(support_labels, way)
        encoded = [t.encode(support) for t in self.transformers]

        def logits(queries: torch.Tensor) -> torch.Tensor:
            per_set = [t.score(k, v, support_labels, queries, way) for t, (k, v) in zip(self.transformers, encoded)]
            return torch.stack(per_set, dim=-1).mean(-1)

        return logits
