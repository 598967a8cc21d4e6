"""Label-grouped class prototypes and the support-relation matrix used by D2M.

The original ``SupportDK`` reshaped the (shuffled) support set to (5, 5, 8, 2048), so its
"prototypes" were means of random consecutive videos (spec section 8, bug 2). Here the
prototypes are grouped by label with a one-hot matrix, which works for any way, any and
unequal shots and any order of the support set, and needs no data-dependent shapes (so it
also runs on the ``meta`` device used by the profiler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def infer_way(labels: torch.Tensor, way: int | None = None) -> int:
    """The number of classes: ``way`` if given, else ``max(label) + 1`` (labels are 0..W-1)."""
    if way is not None:
        return int(way)
    if labels.numel() == 0:
        raise ValueError("empty support set")
    return int(labels.max().item()) + 1


def label_one_hot(labels: torch.Tensor, way: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N, W)`` one-hot matrix of episode labels in ``dtype``."""
    return F.one_hot(labels.long(), way).to(dtype)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Mean of the features of each class, grouped by label: ``(N, ...) -> (W, ...)``."""
    flat = features.reshape(features.shape[0], -1)
    onehot = label_one_hot(labels, way, flat.dtype)  # (N, W)
    counts = onehot.sum(0).clamp_min(1.0)  # (W,)
    protos = (onehot.t() @ flat) / counts[:, None]
    return protos.reshape(way, *features.shape[1:])


def support_relations(support: torch.Tensor, labels: torch.Tensor, way: int | None = None) -> torch.Tensor:
    """Minus squared distances between class prototypes, diagonal removed.

    ``support`` is ``(Ns, T, D)``; prototypes ``P_c`` (``(T, D)``) are class means by label.
    Entry ``[i, k]`` is ``-||P_i - P_j||_F^2 / T`` for the ``k``-th class ``j != i`` in
    increasing order, so the result is ``(W, W-1)`` and row ``i`` belongs to class ``i``.
    """
    way = infer_way(labels, way)
    frames = support.shape[1] if support.dim() >= 3 else 1
    protos = class_prototypes(support, labels, way).reshape(way, -1)  # (W, T*D)
    diff = protos[:, None, :] - protos[None, :, :]
    rel = -(diff * diff).sum(-1) / frames  # (W, W)
    # gather, not boolean indexing: shapes stay data-independent (meta-device friendly)
    cols = torch.tensor([[j for j in range(way) if j != i] for i in range(way)], dtype=torch.long)
    return rel.gather(1, cols.reshape(way, way - 1).to(rel.device))
