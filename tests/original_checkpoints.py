"""Original Lite-MKD checkpoints rebuilt from the JSON manifests of their formats
(``tests/fixtures/original-checkpoints``, copied from ``shared/fixtures``): exact key
names, shapes and dtypes, random values (a positive ``running_var``, the real TRX
sinusoid in ``pe.pe``). Non-trunk widths can be scaled down (2048 -> ``dim``, 1152 ->
``out_dim``, and their multiples) so a test builds small real tensors; full size is for
the ``meta`` device."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "original-checkpoints"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
TRUNK_PREFIXES = ("backbone.resnet.", "backbone.mobile.", "resnet.")


def manifest(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def scaled(key: str, shape: list[int], dim: int | None, out_dim: int | None) -> list[int]:
    """``shape`` with the feature width 2048 -> ``dim`` (its multiples too) and the TRX
    width 1152 -> ``out_dim``, for every key outside a CNN trunk."""
    if dim is None or key.startswith(TRUNK_PREFIXES):
        return shape
    sizes = {2048: dim, 4096: 2 * dim, 6144: 3 * dim, 12288: 6 * dim, 18432: 9 * dim, 1152: out_dim or dim}
    return [sizes.get(s, s) for s in shape]


def original_state(name: str, dim: int | None = None, out_dim: int | None = None, device: str = "cpu",
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of manifest ``name`` in its as-saved key order."""
    from mkdcore.models.trx import sinusoidal_table

    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, entry in manifest(name)["state_dict"].items():
        shape = scaled(key, entry["shape"], dim, out_dim)
        dtype = getattr(torch, entry["dtype"])
        if device == "meta":
            state[key] = torch.empty(shape, dtype=dtype, device="meta")
        elif dtype == torch.int64:
            state[key] = torch.tensor(100, dtype=torch.int64).reshape(shape)
        elif key.endswith("pe.pe"):
            state[key] = sinusoidal_table(shape[1], shape[2], 0.1)[None]
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1:  # norm weights
            state[key] = 1 + torch.randn(shape, generator=gen) * 0.1
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return state


def save_original(path: Path, state: dict[str, torch.Tensor], container: str = "student", iteration: int = 9999) -> Path:
    """Write ``state`` as the original code does: ``student`` = {iteration,
    model_state_dict}; ``teacher`` = that plus SGD and MultiStepLR state (with its
    ``Counter`` of milestones); ``bare`` = the state dict alone (``fully_trained.pt``)."""
    if container == "bare":
        obj: Any = state
    else:
        obj = {"iteration": iteration, "model_state_dict": state}
        if container == "teacher":
            n = sum(1 for k, v in state.items() if v.is_floating_point() and not k.endswith(("pe.pe", "running_mean", "running_var")))
            obj["optimizer_state_dict"] = {"state": {}, "param_groups": [
                {"lr": 2e-5, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False,
                 "initial_lr": 2e-5, "params": list(range(n))}]}
            obj["scheduler"] = {"milestones": collections.Counter({1000000: 1}), "gamma": 0.1, "base_lrs": [2e-5],
                                "last_epoch": iteration - 1, "_step_count": iteration, "verbose": False,
                                "_get_lr_called_within_step": False, "_last_lr": [2e-5]}
    torch.save(obj, path)
    return path
