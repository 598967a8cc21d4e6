"""Frames/s decoded: the CPU data path vs the GPU batch path (issue 14), in under a minute.

Writes N synthetic JPEG episodes' videos to a temporary folder, then times, on the same
episodes (same draws):

* ``cpu decode``: ``EpisodeDataset(decode="cpu")`` items in this process: read, decode
  (libjpeg-turbo), resize, crop, flip, to float; what one loader worker does per episode.
* ``gpu read``: the worker side of the GPU path (read bytes, draw, pack).
* ``gpu decode``: ``decode_item`` on CUDA: one batched ``decode_jpeg(device="cuda")``
  call per episode from pinned buffers, then the transform on the GPU (synchronised).

Without CUDA it prints ``no CUDA`` and the CPU number. Run on demand:

    python benchmarks/gpu_decode_check.py --episodes 10 --size 256

``--extract`` also times evaluation feature extraction (a random-weight ResNet-18, 224 px)
for a few ``batch_frames``, fp32 vs bf16 autocast, CPU vs GPU decoding (CUDA only).

Measured 2026-11-26 on one NVIDIA H200 (16 cores; ``--episodes 10 --size 256 --extract``):
cpu decode 1,111 frames/s per process; gpu read 13,882 frames/s; gpu decode 25,981
frames/s. Extraction (R18, 224 px, 2,304 frames): CPU decoding 819-1,088 frames/s (bound
by decoding), GPU decoding 9,243 (fp32) / 11,680 (bf16) at ``batch_frames`` 256 and
7,271 / 9,223 at 1024, so 256 stays the default on CUDA too. GPU and CPU pixels differ
by 1.4/255 on average (nvJPEG vs libjpeg-turbo, CUDA vs CPU resize), 72/255 at most on
the synthetic stick figures' sharp edges.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(root: Path, classes: int, videos: int, frames: int, size: int) -> None:
    """``classes`` x ``videos`` videos of ``frames`` 4:3 JPEG frames, ``size`` px high:
    smooth random images (JPEG-sized like real frames, not flat colour)."""
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(0)
    width = size * 4 // 3
    lines = []
    for c in range(classes):
        for v in range(videos):
            d = root / "rgb_l8" / f"class{c:02d}" / f"vid{v:03d}"
            d.mkdir(parents=True)
            base = torch.randint(0, 256, (1, 3, max(2, size // 8), max(2, width // 8)), generator=g).float()
            img = torch.nn.functional.interpolate(base, size=(size, width), mode="bilinear", align_corners=False)[0]
            img = img.clamp(0, 255).to(torch.uint8)
            for k in range(1, frames + 1):
                (d / f"{k:08d}.jpg").write_bytes(encode_jpeg(img.roll(k, dims=2), quality=90).numpy().tobytes())
            lines.append(f"class{c:02d}/vid{v:03d}")
    split = root / "splits" / "bench"
    split.mkdir(parents=True)
    (split / "trainlist03.txt").write_text("\n".join(lines) + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_extraction(root: Path, keys: list, frames: int, device: torch.device) -> None:
    import torchvision

    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.transforms import ClipTransform
    from mkdcore.stages.scoring import extract_backbone_features

    class R18(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            net = torchvision.models.resnet18()
            net.fc = torch.nn.Identity()
            self.net = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"features": self.net(x)}

    model = R18().to(device).to(memory_format=torch.channels_last)
    layout, t = DatasetLayout(root), ClipTransform(resize=256, crop=224, train=False)
    for batch_frames in (256, 1024):
        for amp in ("none", "auto"):
            for decode in ("cpu", "auto"):
                list(extract_backbone_features(model, layout, keys[:4], "rgb", t, frames, device, batch_frames, amp=amp, decode=decode))
                sync(device)
                t0 = time.perf_counter()
                n = sum(1 for _ in extract_backbone_features(model, layout, keys, "rgb", t, frames, device, batch_frames, amp=amp, decode=decode))
                sync(device)
                dt = time.perf_counter() - t0
                print(f"extract: batch_frames {batch_frames} amp {amp} decode {decode}: {n * frames / dt:.0f} frames/s ({n} videos, {dt:.2f} s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--size", type=int, default=256, help="stored frame height (px), width 4/3 of it")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=5)
    ap.add_argument("--query", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--extract", action="store_true", help="also time feature extraction (CUDA only)")
    args = ap.parse_args(argv)

    from mkdcore.data.device_decode import decode_item, resolve_decode
    from mkdcore.data.episodes import EpisodeSampler
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.loader import EpisodeDataset
    from mkdcore.data.splits import load_split
    from mkdcore.data.transforms import ClipTransform

    resize = min(256, args.size)
    transform = ClipTransform(resize=resize, crop=min(224, resize), train=True)
    per_episode = args.way * (args.shot + args.query) * args.frames
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, classes=args.way + 1, videos=args.shot + args.query + 2, frames=args.frames + 4, size=args.size)
        layout = DatasetLayout(root)
        index = load_split(layout, "bench", "train")

        def dataset(decode: str) -> EpisodeDataset:
            sampler = EpisodeSampler(index, args.way, args.shot, args.query, seed=0)
            return EpisodeDataset(layout, index, sampler, ["rgb"], transform, frames=args.frames,
                                  num_episodes=args.episodes + 1, seed=0, decode=decode)  # type: ignore[arg-type]

        cpu = dataset("cpu")
        cpu[args.episodes]  # warm-up (page cache, first-call costs), not timed
        t0 = time.perf_counter()
        for i in range(args.episodes):
            cpu[i]
        dt = time.perf_counter() - t0
        frames = args.episodes * per_episode
        print(f"cpu decode: {frames / dt:.0f} frames/s ({args.episodes} episodes of {per_episode} frames, "
              f"{args.size} px, one process, {torch.get_num_threads()} threads)")
        if not torch.cuda.is_available():
            print("no CUDA: GPU batch decoding not measured")
            return
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(device)}; runtime.decode auto -> {resolve_decode('auto', device)}")
        enc = dataset("cuda")
        first = decode_item(enc[args.episodes], device)  # warm-up: nvJPEG handles, kernels
        sync(device)
        t0 = time.perf_counter()
        raws = [enc[i].copy() for i in range(args.episodes)]
        read_s = time.perf_counter() - t0
        raws = [r | {"encoded": r["encoded"].pin_memory()} for r in raws]
        sync(device)
        t0 = time.perf_counter()
        items = [decode_item(r, device) for r in raws]
        sync(device)
        gpu_s = time.perf_counter() - t0
        print(f"gpu read: {frames / read_s:.0f} frames/s (worker side: read bytes, draw, pack)")
        print(f"gpu decode: {frames / gpu_s:.0f} frames/s (batched decode_jpeg + transform on the GPU, pinned input)")
        diff = max(float((a - cpu[i]["support_frames"].to(device)).abs().max())
                   for i, a in enumerate(x["support_frames"] for x in items[:2]))
        print(f"gpu vs cpu pixels: max abs difference {diff:.4f} (JPEG decoders and resize kernels differ slightly)")
        del first
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
        if args.extract:
            keys = index.keys() * 4  # the same videos again: enough frames for large batches
            time_extraction(root, keys, args.frames, device)


if __name__ == "__main__":
    main()
