"""Data-loading throughput: episodes and frames/s from a generated frame tree.

Builds a tree of real (not hard-linked) JPEGs at a chosen size, then times the
episode loader (decode + resize + crop) for a few worker counts. Run on demand:

    python benchmarks/bench_data.py --size 256 --crop 224 --episodes 20 --workers 0,2

Reports frames/s = decoded-and-transformed frames per second of wall time
(support + query clips x T frames x modalities).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, classes: int, videos: int, frames: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    split = root / "splits" / "bench"
    split.mkdir(parents=True)
    lines = []
    for c in range(classes):
        for v in range(videos):
            d = root / "rgb_l8" / f"class{c:02d}" / f"vid{v:03d}"
            d.mkdir(parents=True)
            base = rng.integers(0, 256, (size // 8, (size * 4 // 3) // 8, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize(((size * 4 // 3), size), Image.BILINEAR)
            for k in range(1, frames + 1):
                img.save(d / f"{k:08d}.jpg", quality=90)
            lines.append(f"class{c:02d}/vid{v:03d}")
    (split / "trainlist03.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="shorter side of stored frames (px)")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=5)
    ap.add_argument("--query", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()

    from mkdcore.data.episodes import EpisodeSampler
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.loader import EpisodeDataset, episode_loader
    from mkdcore.data.splits import load_split
    from mkdcore.data.transforms import ClipTransform

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, classes=args.way + 2, videos=args.shot + args.query + 2, frames=args.frames, size=args.size)
        print(f"built tree in {time.perf_counter() - t0:.1f} s ({args.size}px frames)")
        layout = DatasetLayout(root)
        index = load_split(layout, "bench", "train")
        per_episode = args.way * (args.shot + args.query) * args.frames
        for workers in [int(w) for w in args.workers.split(",")]:
            sampler = EpisodeSampler(index, args.way, args.shot, args.query, seed=0)
            ds = EpisodeDataset(layout, index, sampler, ["rgb"], ClipTransform(args.size, args.crop, train=True), num_episodes=args.episodes + 2)
            it = iter(episode_loader(ds, num_workers=workers))
            next(it), next(it)  # warm-up: worker start-up is not throughput
            t0 = time.perf_counter()
            for _ in range(args.episodes):
                next(it)
            dt = time.perf_counter() - t0
            print(
                f"workers={workers}: {args.episodes / dt:.2f} episodes/s, {args.episodes * per_episode / dt:.0f} frames/s "
                f"({args.way}-way {args.shot}-shot {args.query}-query, T={args.frames}, {args.size}px -> {args.crop}px)"
            )


if __name__ == "__main__":
    main()
