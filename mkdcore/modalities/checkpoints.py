"""Reading the official weight files of the expert networks (FlowNet2, AdaBins) strictly.

The files are the authors' releases, which users download themselves (mkd never does):
a pickled container dict (``{'epoch', 'state_dict', 'best_EPE'}`` for FlowNet2,
``{'model', 'optimizer', 'epoch'}`` for AdaBins) or a bare state dict. Both are read
with ``torch.load(weights_only=True)`` (no code from the file runs), and every failure
is one line naming the file: a missing file, a truncated or foreign file, or a state
dict whose keys or shapes do not match the network (missing and unexpected keys named).

Networks are built on the ``meta`` device and the file's tensors are *assigned* into
them (``load_state_dict(assign=True)``): no time is spent on a random initialisation
that is overwritten anyway (FlowNet2 has 162 M parameters), and because the check is
strict every parameter and buffer is guaranteed to come from the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdcore.errors import ConfigError
from mkdcore.fileio import first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

#: how many key names one error line shows (of each kind) before "... and N more"
SHOWN_KEYS = 4


def read_state_dict(path: Path, label: str, containers: Iterable[str], hint: str) -> dict[str, torch.Tensor]:
    """The state dict inside the official file at ``path``.

    ``containers``: keys of the container dict that may hold the state dict, tried in
    order (a file that is itself a state dict is accepted too). ``label`` starts every
    message (e.g. ``"flow: FlowNet2 weights"``); ``hint`` ends it (where to get the file).
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{label} {path} does not exist; {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says becomes one line
        first = first_line(exc)
        raise ConfigError(f"{label} {path} is not a readable PyTorch checkpoint (truncated or another format: {first}); {hint}") from None
    if isinstance(obj, Mapping):
        for key in containers:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{label} {path} holds no state dict (expected a dict of tensors, or a container with "
                          f"one of {list(containers)}); {hint}")
    return {str(k): v for k, v in obj.items()}


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Keys without a leading ``prefix`` (DataParallel / DistributedDataParallel saves)."""
    return {(k.removeprefix(prefix)): v for k, v in state.items()}


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" ... and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def load_strict(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], label: str, hint: str) -> nn.Module:
    """Build the network on ``meta`` and assign ``state`` into it; any mismatch is one line.

    Every key of the network must be in ``state`` with its shape, and ``state`` must have
    no other key (the official loaders are strict too). Floating tensors become float32.
    """
    import torch

    with torch.device("meta"):
        net = build()
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (network: {list(v.shape)})" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing key(s): {_names(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected key(s): {_names(unexpected)}" if unexpected else "",
                 f"{len(wrong)} of another shape: {_names(wrong)}" if wrong else ""]
        raise ConfigError(f"{label} does not match {type(net).__name__}: " + "; ".join(p for p in parts if p) + f"; {hint}")
    converted = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    net.load_state_dict(converted, strict=True, assign=True)
    return net.eval()


def any_key(state: Mapping[str, Any], prefixes: Iterable[str]) -> bool:
    """Whether some key of ``state`` starts with one of ``prefixes``."""
    pre = tuple(prefixes)
    return any(k.startswith(pre) for k in state)
