"""Choose the torch device at run time (never at import, never `.cuda()`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mkdcore.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto", what: str = "runtime.device") -> "torch.device":
    """``auto`` -> the first CUDA device if there is one, else CPU; ``cpu``, ``cuda``,
    ``cuda:N`` as given, checked to exist. ``what`` names the setting in errors."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{what}: {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what}: {spec!r} requested but no CUDA device is available (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what}: {spec!r}: use auto, cpu, cuda or cuda:N")
    return device
