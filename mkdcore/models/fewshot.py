"""Few-shot models: a frame backbone plus a head, or a head on stored features.

Output contract (docs/internals.md): ``logits_1`` is the head on branch 1 (``features``;
the D2M "kl" branch), ``logits_2`` the same, *shared* head on branch 2 (``features_2``; the
"ce" branch) for two-branch backbones, ``logits`` their sum (what is evaluated);
``relations_1``/``relations_2`` the support relations of each branch, ``relations`` those
of the last branch (what D2M distils: branch 2 when there is one), and the per-branch
``support_features``/``query_features`` ``(N, T, D)`` (``*_2`` for branch 2).
"""

from __future__ import annotations

import torch
from torch import nn

from mkdcore.models.relations import infer_way

BRANCH_KEYS = ("features", "features_2")


def _collect(head_outputs: list[dict[str, torch.Tensor]], features: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, (res, (sup, qry)) in enumerate(zip(head_outputs, features), start=1):
        suffix = "" if i == 1 else f"_{i}"
        out[f"logits_{i}"] = res["logits"]
        if "relations" in res:
            out[f"relations_{i}"] = res["relations"]
            out["relations"] = res["relations"]
        for key, value in res.items():  # head extras, per branch
            if key not in ("logits", "relations"):
                out[f"{key}_{i}"] = value
        out[f"support_features{suffix}"] = sup
        out[f"query_features{suffix}"] = qry
    logits = head_outputs[0]["logits"]
    for res in head_outputs[1:]:
        logits = logits + res["logits"]
    out["logits"] = logits
    return out


class FeatureHeadModel(nn.Module):
    """A head on precomputed features ``(Ns, T, D)``/``(Nq, T, D)`` (teachers, MFM)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, way: int | None = None
    ) -> dict[str, torch.Tensor]:
        way = infer_way(support_labels, way)
        res = self.head(support, support_labels, queries, way=way)
        return _collect([res], [(support, queries)])


class FewShotModel(nn.Module):
    """Backbone on frames + one head shared by the backbone's branches.

    Support and query frames go through the backbone in separate calls (each with its own
    BatchNorm batch statistics in training, as the original); ``chunk_frames`` splits each
    call further into chunks of at most that many frames to bound memory (``None``: one
    call, which keeps the original BN statistics in training).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, chunk_frames: int | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.chunk_frames = backbone, head, chunk_frames

    @property
    def branches(self) -> int:
        return int(getattr(self.backbone, "branches", 1))

    def encode(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """``(N, T, 3, H, W)`` -> one ``(N, T, D)`` tensor per branch."""
        n, t = clips.shape[:2]
        frames = clips.reshape(n * t, *clips.shape[2:])
        step = self.chunk_frames or frames.shape[0]
        parts = [self.backbone(frames[i : i + step]) for i in range(0, frames.shape[0], step)]
        keys = [k for k in BRANCH_KEYS if k in parts[0]]
        return [torch.cat([p[k] for p in parts]).reshape(n, t, -1) for k in keys]

    def forward(
        self,
        support_frames: torch.Tensor,
        support_labels: torch.Tensor,
        query_frames: torch.Tensor,
        way: int | None = None,
    ) -> dict[str, torch.Tensor]:
        way = infer_way(support_labels, way)
        support = self.encode(support_frames)
        queries = self.encode(query_frames)
        results = [self.head(s, support_labels, q, way=way) for s, q in zip(support, queries)]
        return _collect(results, list(zip(support, queries)))
