"""The teacher "Baseline" head: minus the mean Euclidean distance to each shot of a class.

``logit_c(q) = -(1/K_c) * sum_{k in c} ||mean_t q - mean_t s_k||_2`` (spec 1.3): the mean
distance to the class's shots, not the distance to a prototype. Parameter-free; shots are
grouped by label (any order, unequal shots allowed).
"""

from __future__ import annotations

import torch
from torch import nn

from mkdcore.models.relations import infer_way, label_one_hot, support_relations


class MeanDistanceHead(nn.Module):
    """Returns ``{"logits": (Nq, W), "relations": (W, W-1)}``."""

    def __init__(self, in_dim: int = 2048) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, way: int | None = None
    ) -> dict[str, torch.Tensor]:
        way = infer_way(support_labels, way)
        s = support.mean(1)  # (Ns, D)
        q = queries.mean(1)  # (Nq, D)
        distances = (q[:, None, :] - s[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()  # (Nq, Ns)
        onehot = label_one_hot(support_labels, way, distances.dtype)  # (Ns, W)
        mean_distance = (distances @ onehot) / onehot.sum(0).clamp_min(1.0)
        return {"logits": -mean_distance, "relations": support_relations(support, support_labels, way)}
