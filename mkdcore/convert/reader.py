"""Read an original checkpoint file into a flat ``{key: tensor}`` state dict.

The original saves either a wrapper dict (students: ``iteration`` +
``model_state_dict``; teachers: the same plus ``optimizer_state_dict`` and
``scheduler``) or a bare state dict (``fully_trained.pt``). Both load with
``weights_only=True`` (no pickled code ever runs). A truncated download, a foreign file
or a dict without tensors is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mkdcore.convert import ConvertError
from mkdcore.fileio import first_line

#: wrapper keys that hold the state dict, in the order they are tried
WRAPPERS = ("model_state_dict", "state_dict", "model")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``path`` (on the CPU), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign bytes, pickle with code: all one line
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)[:200]}); "
                           f"a truncated download or a file torch.save did not write") from None
    for wrapper in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise ConvertError(f"{path}: holds no state dict (a {type(obj).__name__}), expected the original's "
                           f"{{'model_state_dict': ...}} or a bare state dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConvertError(f"{path}: not a state dict of tensors (entry {bad[0]!r} is not a tensor; "
                           f"top-level keys: {', '.join(map(str, list(obj)[:6]))})")
    return dict(obj)
