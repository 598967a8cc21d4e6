"""The two deployable halves of a few-shot model, shared by the eager API
(:class:`mkdcore.models.loaded.LoadedModel`) and every export format, so what is
exported is exactly what runs eagerly.

* :class:`FrameEncoder`: clips ``(N, T, 3, H, W)`` -> per-video features ``(N, T, W)``,
  ``W = branches * dim``: a two-branch backbone (the Lite-MKD student's fc1/fc2) gives
  its branches concatenated on the last axis (branch 1 first). One tensor per video,
  so support features can be stored and reused (``support.npz``).
* :class:`FewShotHead`: support features ``(Ns, T, W)``, support labels ``(Ns,)``
  (int64, ``0..way-1``), query features ``(Nq, T, W)`` -> logits ``(Nq, way)``: the
  head on each branch's slice, logits summed over branches (what ``FewShotModel``
  evaluates). ``way`` is fixed at construction (a static shape: no ``.item()`` on the
  labels); ``Ns`` and ``Nq`` may vary, and shots may be unequal per class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mkdcore.errors import DataError
from mkdcore.models.fewshot import BRANCH_KEYS


class FrameEncoder(nn.Module):
    """Backbone on every frame, ``(N, T, 3, H, W) -> (N, T, branches * dim)``."""

    def __init__(self, backbone: nn.Module, branches: int) -> None:
        super().__init__()
        self.backbone, self.keys = backbone, BRANCH_KEYS[:branches]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t = clips.shape[0], clips.shape[1]
        out = self.backbone(clips.reshape(n * t, clips.shape[2], clips.shape[3], clips.shape[4]))
        return torch.cat([out[k] for k in self.keys], dim=-1).reshape(n, t, -1)


@runtime_checkable
class PreparesSupport(Protocol):
    """A head that can fix its support set once (the optional ``prepare`` of the head
    contract, :func:`mkdcore.hookspecs.register_heads`)."""

    def prepare(self, support: torch.Tensor, support_labels: torch.Tensor,
                way: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]: ...


class FewShotHead(nn.Module):
    """Logits ``(Nq, way)`` of the shared head summed over the branches' feature slices."""

    def __init__(self, head: nn.Module, way: int, dim: int, branches: int) -> None:
        super().__init__()
        self.head, self.way, self.dim, self.branches = head, int(way), int(dim), int(branches)

    def _slices(self) -> list[slice]:
        """Each branch's part of the feature width."""
        return [slice(b * self.dim, (b + 1) * self.dim) for b in range(self.branches)]

    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return _summed([self.head(support[..., part], support_labels, queries[..., part], way=self.way)["logits"]
                        for part in self._slices()])

    def prepare(self, support: torch.Tensor, support_labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``queries -> logits`` as :meth:`forward` gives them, with whatever depends only on
        the support set computed now, once, when the head can (:class:`PreparesSupport`)."""
        scorers = [(part, self._branch_scorer(support[..., part], support_labels)) for part in self._slices()]
        return lambda queries: _summed([scorer(queries[..., part]) for part, scorer in scorers])

    def _branch_scorer(self, support: torch.Tensor, support_labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if isinstance(self.head, PreparesSupport):
            return self.head.prepare(support, support_labels, way=self.way)
        return lambda queries: self.head(support, support_labels, queries, way=self.way)["logits"]


def _summed(parts: list[torch.Tensor]) -> torch.Tensor:
    """The branches' logits added in branch order (no ``0 +``: the exported graph has the
    head's ops and one add per extra branch, nothing else)."""
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def check_clips(shape: tuple[int, ...], contract: dict[str, Any], source: str) -> None:
    """Clips ``(N, T, 3, S, S)`` as the card's input contract says, else one line naming
    ``source`` (the model) and what differs."""
    frames, size = contract.get("frames"), contract.get("frame_size")
    if len(shape) != 5 or shape[2] != 3:
        raise DataError(f"{source} reads clips of shape (N, T, 3, H, W), got {tuple(shape)}")
    if frames is not None and shape[1] != frames:
        raise DataError(f"{source} reads {frames} frames per clip, got {shape[1]}")
    if size is not None and tuple(shape[3:]) != (size, size):
        raise DataError(f"{source} reads {size}x{size} frames, got {shape[3]}x{shape[4]} (resize shorter side to "
                        f"{contract.get('resize')}, centre crop {size})")


def check_features(shape: tuple[int, ...], width: int, frames: int | None, what: str, source: str) -> None:
    """Features ``(N, T, width)`` for the head, else one line."""
    if len(shape) != 3 or shape[2] != width or (frames is not None and shape[1] != frames):
        raise DataError(f"{source}: {what} features must be (N, {frames or 'T'}, {width}), got {tuple(shape)}")
