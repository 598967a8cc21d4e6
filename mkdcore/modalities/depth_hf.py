"""Monocular depth with a ``transformers`` depth-estimation checkpoint from a local folder.

Any checkpoint that ``AutoModelForDepthEstimation`` loads works (Depth Anything v1/v2,
DPT / DPT-hybrid, GLPN, ZoeDepth...). It is never downloaded: ``local_files_only=True``
and the folder must hold ``config.json``, the weights and ``preprocessor_config.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mkdcore.errors import ConfigError

EXAMPLE_REPO = "depth-anything/Depth-Anything-V2-Small-hf"


def download_hint(key: str = "checkpoint") -> str:
    return (
        f"download a transformers depth-estimation checkpoint folder on a machine with network, e.g. "
        f"`huggingface-cli download {EXAMPLE_REPO} --local-dir DIR`, and set the depth option {key}=DIR "
        f"(config: modalities.derive.depth.options.{key}; CLI: -o {key}=DIR)"
    )


class HFDepthEstimator:
    """``__call__(frames uint8 (N, H, W, 3)) -> float32 (N, H, W)`` raw network output."""

    def __init__(self, checkpoint: Path | None, batch_size: int = 16) -> None:
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.device = "cpu"
        self.model: Any = None
        self.processor: Any = None

    def setup(self, device: str) -> None:
        if self.checkpoint is None:
            raise ConfigError(f"depth: backend 'hf' needs the option checkpoint; {download_hint()}")
        path = Path(self.checkpoint).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"depth: checkpoint {path} has no config.json (not a transformers checkpoint folder); {download_hint()}")
        if not (path / "preprocessor_config.json").is_file():
            raise ConfigError(f"depth: checkpoint {path} has no preprocessor_config.json (the image processor); {download_hint()}")
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise ConfigError("depth: backend 'hf' needs transformers: pip install 'lite-mkd[depth]'") from None
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
            self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(f"depth: checkpoint {path} is not a loadable depth-estimation model ({first}); {download_hint()}") from None
        self.device = device
        self.model = model.eval().to(device)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if self.model is None:
            self.setup(self.device)
        n, h, w, _ = frames.shape
        out = []
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                batch = list(frames[s : s + self.batch_size])
                inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
                pred = self.model(**inputs).predicted_depth  # (B, h', w')
                pred = F.interpolate(pred[:, None].float(), size=(h, w), mode="bicubic", align_corners=False)[:, 0]
                out.append(pred.cpu().numpy())
        return np.concatenate(out).astype(np.float32)
