"""Choose the torch device at run time (never at import, never `.cuda()`)."""

from __future__ import annotations

import torch

from mkdcore.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"runtime.device: {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {spec!r} requested but no CUDA device is available (use auto or cpu)")
    return device
