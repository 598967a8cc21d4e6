"""Dense optical flow estimators: OpenCV on CPU (DIS, Farneback, TV-L1) and RAFT (torch).

Every estimator maps two uint8 RGB stacks ``(N, H, W, 3)`` (from, to) to flow
``(N, H, W, 2)`` float32 in pixels (dx right, dy down), such that
``to[y + dy, x + dx] ~ from[y, x]``. Measured on a 2-core CPU (environment.md section 4),
224 px pair: DIS ultrafast 0.26 ms, fast 0.75 ms, medium 2.9 ms; Farneback 9.5 ms;
TV-L1 320 ms; RAFT-small 185 ms on CPU (use a GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mkdcore.errors import ConfigError, PluginError

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

CONTRIB_INSTALL = (
    "pip uninstall -y opencv-python-headless && pip install opencv-contrib-python-headless"
)


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class OpenCVFlow:
    """One of OpenCV's CPU methods; the estimator object is built lazily per process
    (OpenCV objects cannot be pickled into worker processes)."""

    def __init__(self, method: str = "dis", preset: str = "medium") -> None:
        if method not in ("dis", "farneback", "tvl1"):
            raise PluginError(f"flow: unknown OpenCV method {method!r}; use dis, farneback or tvl1")
        if method == "tvl1" and not hasattr(cv2, "optflow"):
            raise PluginError(
                f"flow: method 'tvl1' needs cv2.optflow, which the installed OpenCV lacks; install the contrib build: {CONTRIB_INSTALL}"
            )
        self.method = method
        self.preset = preset
        self._impl: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset, "_impl": None}

    def _estimator(self) -> Any:
        if self._impl is None:
            if self.method == "dis":
                self._impl = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
            elif self.method == "tvl1":
                self._impl = cv2.optflow.DualTVL1OpticalFlow_create()
            else:
                self._impl = "farneback"
        return self._impl

    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from RGB frame ``a`` to ``b``, float32 ``(H, W, 2)`` px."""
        g0, g1 = _grey(a), _grey(b)
        impl = self._estimator()
        if impl == "farneback":
            return cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return impl.calc(g0, g1, None)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return np.stack([self.pair(a, b) for a, b in zip(src, dst)]).astype(np.float32)


class RaftFlow:
    """torchvision RAFT with weights from a local file (never downloaded), batched."""

    def __init__(self, model: str = "raft_small", weights: Path | None = None, iters: int = 12, batch_size: int = 16) -> None:
        self.model_name = model
        self.weights = weights
        self.iters = iters
        self.batch_size = batch_size
        self.device = "cpu"
        self._net: Any = None

    def _download_hint(self) -> str:
        from torchvision.models import optical_flow as of

        enum = of.Raft_Small_Weights if self.model_name == "raft_small" else of.Raft_Large_Weights
        return f"download {enum.DEFAULT.url} and set the flow option weights=<that file>"

    def setup(self, device: str) -> None:
        import torch
        from torchvision.models import optical_flow as of

        if self.weights is None:
            raise ConfigError(f"flow: method 'raft' needs the option weights (a local {self.model_name} state dict); {self._download_hint()}")
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"flow: RAFT weights file {path} (option weights) does not exist; {self._download_hint()}")
        net = getattr(of, self.model_name)(weights=None, progress=False)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"flow: {path} (option weights) is not a {self.model_name} state dict ({first}); {self._download_hint()}") from None
        self.device = device
        self._net = net.eval().to(device)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if self._net is None:
            self.setup(self.device)
        n, h, w, _ = src.shape
        # RAFT needs sides divisible by 8 and at least 128 px (its correlation pyramid);
        # smaller frames (e.g. 112 px synthetic data) are padded by edge replication
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
        out = []
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                pair = []
                for stack in (src[s : s + self.batch_size], dst[s : s + self.batch_size]):
                    x = torch.from_numpy(np.ascontiguousarray(stack)).to(self.device).permute(0, 3, 1, 2).float()
                    x = x / 127.5 - 1.0  # torchvision's RAFT expects [-1, 1]
                    pair.append(F.pad(x, (0, pw, 0, ph), mode="replicate"))
                flow = self._net(pair[0], pair[1], num_flow_updates=self.iters)[-1]
                out.append(flow[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)
