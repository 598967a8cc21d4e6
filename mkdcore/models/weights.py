"""Load a local timm or torchvision state dict into a timm trunk, never downloading.

Accepted files: ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``; a checkpoint
dict wrapping the state dict under ``state_dict``/``model`` is unwrapped) and
``.safetensors``. Keys are used as they are (timm and torchvision ResNets share key names);
a ``module.`` prefix (DataParallel) is stripped and classifier keys the trunk does not have
are ignored. A torchvision MobileNetV3 file (``features.N...`` keys) is mapped onto timm's
MobileNetV3 by parameter order, checked shape by shape (the two share one architecture).
Anything else that does not fit raises :class:`WeightsError` naming the missing and
unexpected keys in one line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mkdcore.errors import MkdError

#: keys of classifier heads that a trunk (num_classes=0) does not have
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "conv_head.", "head_drop.")


class WeightsError(MkdError):
    """A local pretrained weights file is missing, unreadable or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file (no network, ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, pickle with code, wrong format
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _by_order(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Rename a torchvision MobileNetV3 ``features.*`` state dict to the model's keys by order."""
    if not any(k.startswith("features.") for k in state):
        return None
    source = [(k, v) for k, v in state.items() if k.startswith("features.")]
    target = list(model.state_dict().items())
    if len(source) != len(target) or any(sv.shape != tv.shape for (_, sv), (_, tv) in zip(source, target)):
        return None
    return {tk: sv for (tk, _), (_, sv) in zip(target, source)}


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def load_trunk_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model`` strictly (classifier keys aside); one-line errors."""
    state = read_state_dict(path)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(HEAD_PREFIXES)}
    if set(state) != set(own):
        mapped = _by_order(model, state)
        if mapped is not None:
            state = mapped
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch: {_summarise([f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in wrong])}")
        raise WeightsError(f"{path}: weights do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
