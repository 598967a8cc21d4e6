"""Frames/s of the modality estimators: OpenCV flow, RAFT, FlowNet2, AdaBins, AlphaPose drawing.

    python benchmarks/bench_modalities.py                         # CPU, 224 px, the CPU methods (seconds)
    python benchmarks/bench_modalities.py --methods all --frames 2 --batch 2   # + RAFT, FlowNet2, AdaBins (minutes on CPU)
    python benchmarks/bench_modalities.py --device cuda --frames 64 --batch 16  # every method
    python benchmarks/bench_modalities.py --methods flownet2,adabins --out bench.json

Networks get random weights (the numbers are the same with the released files: same
shapes, same operations), built on ``meta`` and filled in place, so nothing is downloaded.
One image per frame is what ``mkd data derive`` writes, so flow frames/s = pairs/s. Each
method runs one warm-up batch first; the time covers the estimator call on uint8 frames
to the numpy result (transfers included), not JPEG decoding or writing, which the
derive runner adds (about 1-2 ms a frame at 224 px). Needs torch, torchvision, timm,
OpenCV, numpy: not pydantic, so it runs on a bare GPU image too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def randomised(net: Any, device: str) -> Any:
    """A meta-built module on ``device`` with small random weights (no initialiser cost)."""
    from mkdcore.testing import random_weights

    return random_weights(net, device, std=0.02).eval()


def frames(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` textured RGB frames and the same moved by (3, -2) px."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 256, (n, size + 8, size + 8, 3)).astype(np.uint8).reshape(-1, size + 8, 3), (7, 7), 1.5)
    big = big.reshape(n, size + 8, size + 8, 3)
    return np.ascontiguousarray(big[:, 4 : 4 + size, 4 : 4 + size]), np.ascontiguousarray(big[:, 6 : 6 + size, 1 : 1 + size])


def estimators(device: str, batch: int) -> dict[str, Callable[[], Callable[[np.ndarray, np.ndarray], Any]]]:
    """method -> builder of ``f(src, dst)``."""

    def opencv(method: str, preset: str = "medium") -> Callable[[], Any]:
        def build() -> Any:
            from mkdcore.modalities.optical_flow import OpenCVFlow

            return OpenCVFlow(method, preset)
        return build

    def raft() -> Any:
        import torch
        from torchvision.models.optical_flow import raft_small

        from mkdcore.modalities.optical_flow import RaftFlow

        est = RaftFlow("raft_small", None, 12, batch)
        with torch.device("meta"):
            net = raft_small(weights=None, progress=False)
        est._net, est.device = randomised(net, device), device  # random weights instead of setup()'s file
        return est

    def flownet2() -> Any:
        import torch

        from mkdcore.modalities.flownet2 import FlowNet2, FlowNet2Flow

        est = FlowNet2Flow(None, batch)
        with torch.device("meta"):
            net = FlowNet2()
        est._net, est.device = randomised(net, device), device
        return est

    def adabins(flip: bool) -> Callable[[], Any]:
        def build() -> Any:
            import torch

            from mkdcore.modalities.adabins import AdaBinsDepth, UnetAdaptiveBins

            est = AdaBinsDepth(None, "nyu", flip=flip, batch_size=batch)
            with torch.device("meta"):
                net = UnetAdaptiveBins()
            est._net, est.device = randomised(net, device), device
            return lambda src, dst: est(src)
        return build

    def alphapose() -> Any:
        from mkdcore.modalities.alphapose import RESULT_FILE, AlphaPoseResults
        from mkdcore.modalities.pose import draw_skeletons

        tmp = Path(tempfile.mkdtemp(prefix="bench-alphapose-"))
        (tmp / "c" / "v").mkdir(parents=True)
        rng = np.random.default_rng(0)

        def run(src: np.ndarray, dst: np.ndarray) -> list[np.ndarray]:
            n, h, w, _ = src.shape
            names = [f"{i:08d}.jpg" for i in range(n)]
            people = [{"image_id": name, "keypoints": (rng.random((17, 3)) * [w, h, 1]).reshape(-1).tolist(), "score": 2.0}
                      for name in names for _ in range(2)]
            (tmp / "c" / "v" / RESULT_FILE).write_text(json.dumps(people))
            est = AlphaPoseResults(tmp, 5)
            return [draw_skeletons(h, w, p, 0.4) for p in est.people(("c", "v"), names)]
        return run

    return {
        "dis": opencv("dis"), "dis_fast": opencv("dis", "fast"), "farneback": opencv("farneback"),
        "raft": raft, "flownet2": flownet2, "adabins": adabins(True), "adabins_noflip": adabins(False),
        "alphapose": alphapose,
    }


def compare_with_cpu(device: str, size: int) -> dict[str, float]:
    """The same random FlowNet2 and AdaBins on ``device`` and on CPU: largest output difference."""
    import copy

    import torch

    from mkdcore.modalities.adabins import AdaBinsDepth, UnetAdaptiveBins
    from mkdcore.modalities.flownet2 import FlowNet2, FlowNet2Flow

    src, dst = frames(2, size, seed=1)
    out: dict[str, float] = {}
    for name, build, make in (("flownet2", FlowNet2, lambda: FlowNet2Flow(None, 2)),
                              ("adabins", UnetAdaptiveBins, lambda: AdaBinsDepth(None, "nyu", batch_size=2))):
        with torch.device("meta"):
            net = build()
        cpu_net = randomised(net, "cpu")
        results = []
        for dev, module in (("cpu", cpu_net), (device, copy.deepcopy(cpu_net).to(device))):
            est = make()
            est._net, est.device = module, dev
            results.append(est(src, dst) if name == "flownet2" else est(src))
        out[f"{name}_max_abs_output"] = float(np.abs(results[0]).max())
        out[f"{name}_max_abs_difference"] = float(np.abs(results[0] - results[1]).max())
    return out


#: the methods a CPU runs in seconds (the default there; `make bench` runs this script with its defaults)
CPU_METHODS = ("dis", "dis_fast", "farneback", "alphapose")


def measure(fn: Callable[[np.ndarray, np.ndarray], Any], src: np.ndarray, dst: np.ndarray, warm: int) -> float:
    fn(src[:warm], dst[:warm])
    start = time.perf_counter()
    fn(src, dst)
    return len(src) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=224, help="frame side in px")
    p.add_argument("--frames", type=int, default=4, help="frames (pairs) timed per method")
    p.add_argument("--batch", type=int, default=4, help="frames per forward pass (networks)")
    p.add_argument("--methods", default="", help="comma list or 'all'; default: all on cuda, the CPU methods on cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--compare-cpu", action="store_true", help="also run FlowNet2 and AdaBins on CPU and compare")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    src, dst = frames(args.frames, args.size)
    builders = estimators(args.device, args.batch)
    info = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "torch_threads": torch.get_num_threads(), "size": args.size, "frames": args.frames, "batch": args.batch}
    results: dict[str, Any] = {"setup": info, "frames_per_s": {}}
    print(json.dumps(info), flush=True)
    methods = args.methods or ("all" if args.device.startswith("cuda") else ",".join(CPU_METHODS))
    for name in (list(builders) if methods == "all" else methods.split(",")):
        fps = measure(builders[name](), src, dst, warm=min(args.batch, args.frames))
        results["frames_per_s"][name] = round(fps, 3)
        print(f"{name:16s} {fps:10.2f} frames/s  ({1000 / fps:9.1f} ms/frame)", flush=True)
    if args.compare_cpu:
        results["cpu_vs_device"] = compare_with_cpu(args.device, args.size)
        print(json.dumps(results["cpu_vs_device"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
