"""Parameters and cost of one test episode, counted the way the paper did.

The paper's "GFLOPs" are thop MACs (spec 7): forward hooks on modules that count
``conv``: output elements x (C_in / groups) x kernel area; ``linear``: output elements x
in_features; batch/layer/group norm: 2 x input elements (x2 more with affine); softmax
modules and average pools their small terms; everything functional (matmuls of attention,
distances, activations, max pools) zero. :class:`ThopCounter` reproduces those rules, with
one deliberate difference: norms are matched by ``isinstance`` (thop matches exact types,
so it would skip timm's ``BatchNormAct2d`` although the paper's torchvision BNs counted).

``gflops`` is the total FLOP count of :class:`torch.utils.flop_counter.FlopCounterMode`
(2 FLOPs per multiply-add of every matmul/conv/attention op, including the functional
ones thop skips).

Everything runs on the ``meta`` device: no memory, no arithmetic, a 240-frame 224 px
ResNet-50 episode is counted in well under a second.
"""

from __future__ import annotations

import copy
import math
from typing import Self

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_CONVS = (nn.modules.conv._ConvNd,)


def _conv_macs(m: nn.modules.conv._ConvNd, x: torch.Tensor, y: torch.Tensor) -> int:
    return y.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _norm_ops(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x.numel() * (2 if affine else 1)


def _softmax_ops(m: nn.Softmax, x: torch.Tensor, y: torch.Tensor) -> int:
    features = x.shape[m.dim if m.dim is not None else -1]
    return (x.numel() // features) * (3 * features - 1)


def _adaptive_avg_ops(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    spatial_in = x.shape[2:]
    spatial_out = y.shape[2:]
    kernel = math.prod(math.ceil(i / o) for i, o in zip(spatial_in, spatial_out))
    return (kernel + 1) * y.numel()


def _avg_ops(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * (x.dim() - 2)
    return (math.prod(k) + 1) * y.numel()


class ThopCounter:
    """Context manager adding thop-style forward hooks; ``.macs`` after the forward."""

    RULES = (
        (_CONVS, _conv_macs),
        ((nn.Linear,), lambda m, x, y: y.numel() * m.in_features),
        (_NORMS, _norm_ops),
        ((nn.Softmax,), _softmax_ops),
        ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _adaptive_avg_ops),
        ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _avg_ops),
    )

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs = 0
        self.by_type: dict[str, int] = {}
        self._handles: list = []

    def _hook(self, rule):
        def hook(module, inputs, output):
            if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, torch.Tensor):
                return
            n = int(rule(module, inputs[0], output))
            self.macs += n
            name = type(module).__name__
            self.by_type[name] = self.by_type.get(name, 0) + n

        return hook

    def __enter__(self) -> Self:
        for module in self.model.modules():
            for types, rule in self.RULES:
                if isinstance(module, types):
                    self._handles.append(module.register_forward_hook(self._hook(rule)))
                    break
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def count_params(model: nn.Module) -> int:
    """All parameters (trainable or not), deduplicated by tensor."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def profile_episode(
    model: nn.Module, way: int = 5, shot: int = 5, query: int = 1, frames: int = 8, size: int = 224
) -> dict[str, float | int | str]:
    """Cost of one ``way x shot`` support + ``way x query`` query episode of a FewShotModel.

    Returns ``params`` (count), ``gmacs`` (thop-style conv + linear (+ norm) multiply-adds,
    10^9, the paper's "GFLOPs"), ``gflops`` (FlopCounterMode FLOPs, 10^9) and the episode.
    The model is copied to the ``meta`` device (the original is untouched).
    """
    meta = copy.deepcopy(model).to("meta").eval()
    labels = torch.arange(way, device="meta").repeat_interleave(shot)
    support = torch.empty(way * shot, frames, 3, size, size, device="meta")
    queries = torch.empty(way * query, frames, 3, size, size, device="meta")
    flop_mode = FlopCounterMode(display=False)
    # one forward for both counts: the thop hooks only read shapes, so neither counter sees
    # the other (a meta-device forward of a small CNN costs ~0.2 s of Python dispatch)
    with ThopCounter(meta) as counter, flop_mode:
        meta(support, labels, queries, way=way)
    return {
        "params": count_params(model),
        "mparams": round(count_params(model) / 1e6, 3),
        "gmacs": counter.macs / 1e9,
        "gflops": flop_mode.get_total_flops() / 1e9,
        "macs_by_module": {k: v / 1e9 for k, v in sorted(counter.by_type.items())},
        "episode": f"{way}-way {shot}-shot, {way * query} queries, {frames} frames, {size}px: {(way * shot + way * query) * frames} frames",
        "units": "params: count; gmacs: 1e9 multiply-adds (thop rules, the paper's 'GFLOPs'); gflops: 1e9 FLOPs (torch FlopCounterMode)",
    }
