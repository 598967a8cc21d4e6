"""Decode every frame a run will read, before anything trains.

Which frames a run reads is not fixed in advance: a training clip of a video with more
than ``T`` frames jitters both ends (:func:`mkdcore.data.video.sample_indices`), so any
frame may be read. So every frame of every listed video is decoded, with the same
decoder the stages use (:func:`mkdcore.data.video.decode_frame`): a frame accepted here
is a frame the teacher, feature and student stages can read. Without this a broken
frame surfaced at the features stage, after a teacher had trained for hours.

Checked per video: at least ``min_frames`` frames (``sample_indices`` refuses fewer),
every frame decodes (empty, truncated, non-image files) and all frames share one size
(:func:`mkdcore.data.video.read_frames` refuses mixed sizes). Large trees are spread
over a process pool started from :func:`mkdcore.parallel.worker_context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mkdcore.data.layout import list_frames
from mkdcore.parallel import worker_context

#: below this many videos a pool costs more to start (a torch-importing forkserver) than it saves
POOL_MIN_VIDEOS = 400
#: bad frames named per video before "and N more"
FRAMES_SHOWN = 2


def video_problem(video_dir: Path, min_frames: int) -> str | None:
    """Why the frames of one video folder cannot feed a run, or None (decodes every frame)."""
    from mkdcore.data.video import FrameError, decode_frame

    paths = list_frames(video_dir)
    if len(paths) < min_frames:
        return f"{len(paths)} frames, needs at least {min_frames} (data.frames)" if paths else "no frames"
    bad: list[str] = []
    sizes: dict[tuple[int, ...], str] = {}
    for p in paths:
        try:
            frame = decode_frame(p)
        except FrameError as exc:
            bad.append(f"{p.name} ({exc.reason})")
            continue
        sizes.setdefault(tuple(frame.shape[1:]), p.name)
    if bad:
        more = f" and {len(bad) - FRAMES_SHOWN} more" if len(bad) > FRAMES_SHOWN else ""
        return f"unreadable frame {', '.join(bad[:FRAMES_SHOWN])}{more}"
    if len(sizes) > 1:
        (s0, f0), (s1, f1) = list(sizes.items())[:2]
        return f"frames of different sizes ({f0} is {s0[1]}x{s0[0]}, {f1} is {s1[1]}x{s1[0]})"
    return None


def _check_chunk(args: tuple[list[str], int]) -> list[tuple[int, str]]:
    """(position, problem) for the bad videos of one chunk (runs in a pool worker)."""
    dirs, min_frames = args
    return [(i, why) for i, d in enumerate(dirs) if (why := video_problem(Path(d), min_frames))]


def verify_videos(
    video_dirs: Sequence[Path],
    min_frames: int,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[Path, str]]:
    """``(video_dir, problem)`` for every video whose frames a run could not read,
    in the order given; ``progress(done, total)`` after each chunk."""
    dirs = [str(d) for d in video_dirs]
    total = len(dirs)
    workers = max(1, min(workers, os.cpu_count() or 1))
    if workers > 1 and total >= POOL_MIN_VIDEOS:
        try:
            return _verify_in_pool(dirs, min_frames, workers, progress)
        except BrokenProcessPool:  # a worker died (out of memory?): the check itself must not fail
            pass
    out = []
    for i, d in enumerate(dirs):
        why = video_problem(Path(d), min_frames)
        if why:
            out.append((Path(d), why))
        if progress and (i % 64 == 63 or i == total - 1):
            progress(i + 1, total)
    return out


def _verify_in_pool(dirs: list[str], min_frames: int, workers: int,
                    progress: Callable[[int, int], None] | None) -> list[tuple[Path, str]]:
    total = len(dirs)
    size = max(16, total // (workers * 8))
    starts = list(range(0, total, size))
    found: list[tuple[Path, str]] = []
    ctx = worker_context(["torch", "torchvision", "mkdcore.data.video"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for start, bad in zip(starts, pool.map(_check_chunk, [(dirs[s : s + size], min_frames) for s in starts])):
            found += [(Path(dirs[start + i]), why) for i, why in bad]
            if progress:
                progress(min(total, start + size), total)
    return found
