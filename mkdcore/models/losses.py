"""Loss terms shared by the distillers (spec 5.2).

* :func:`kd_loss`: ``tau^2 * mean_q KL(softmax(t/tau) || softmax(s/tau))``, i.e.
  ``F.kl_div(log p_s, p_t, reduction="none").sum(1).mean() * tau^2`` as the original;
* :func:`dist_loss`: DIST's inter-class relation loss
  ``1 - mean_i pearson(softmax(S_i), softmax(T_i))`` (pearson = cosine of mean-centred rows,
  eps 1e-8), applied row-wise to the (W, W-1) support relations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Temperature KD of student logits onto (detached) teacher logits, times ``tau^2``."""
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    p_t = F.softmax(teacher.detach() / temperature, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="none").sum(-1).mean() * temperature**2


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of two ``(R, C)`` matrices."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - mean_i pearson(softmax(S_i), softmax(T_i))`` on relation matrices."""
    return 1.0 - pearson_rows(student.softmax(-1), teacher.detach().softmax(-1)).mean()


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over queries, mean (student, teachers) or sum (TRX/MFM style)."""
    return F.cross_entropy(logits, labels.long(), reduction=reduction)
