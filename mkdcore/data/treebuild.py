"""Build frame trees from split files quickly (tests, benchmarks, dry runs).

Every frame is a hard link to one small image, so a tree the size of UCF101
(13k videos, 107k frames) costs seconds and almost no disk. Used to check that the
split machinery reproduces the standard counts without the real videos.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mkdcore.data.splits import parse_split_lines


def write_jpeg(path: Path, size: int = 32, seed: int = 0) -> Path:
    """A small random-noise RGB JPEG (PIL), for building trees."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size + size // 2, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def build_tree(
    root: str | os.PathLike,
    split_files: Iterable[str | os.PathLike],
    split_name: str,
    frames: int = 8,
    size: int = 32,
    modalities: Iterable[str] = (),
    link: bool = True,
) -> Path:
    """``<root>/rgb_l8/<class>/<video>/0000000k.jpg`` for every line of ``split_files``
    (copied into ``<root>/splits/<split_name>/``), plus ``<m>_l8`` trees for ``modalities``."""
    root = Path(root)
    source = write_jpeg(root / ".frame.jpg", size)
    split_dir = root / "splits" / split_name
    split_dir.mkdir(parents=True, exist_ok=True)
    videos: set[tuple[str, str]] = set()
    for f in split_files:
        f = Path(f)
        shutil.copyfile(f, split_dir / f.name)
        videos.update(parse_split_lines(f))
    for folder in ["rgb_l8"] + [f"{m}_l8" for m in modalities]:
        base = root / folder
        for cls, vid in sorted(videos):
            d = base / cls / vid
            d.mkdir(parents=True, exist_ok=True)
            for k in range(1, frames + 1):
                target = d / f"{k:08d}.jpg"
                if link:
                    os.link(source, target)
                else:
                    shutil.copyfile(source, target)
    return root
