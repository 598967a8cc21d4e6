"""Raw videos -> the frame layout ``<out>/rgb_l8/<class>/<video>/00000001.jpg ...``.

Frames are chosen as ``int(linspace(0, n-1, frames))`` (the only frame-reduction
script of the seed, spec 1.1). Each video is written into a hidden temporary folder
and renamed into place, so a folder with the final name is always complete: that is
what makes the import resumable and keeps a crash from leaving a "done" half video.
Decoding uses PyAV (FFmpeg); failures are collected, never fatal for the others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mkdcore.data.layout import list_frames
from mkdcore.errors import DataError
from mkdcore.parallel import worker_context

VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ImportJob:
    source: Path
    class_name: str
    video: str
    dest: Path


@dataclass
class ImportResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def find_videos(videos_dir: Path, out_rgb: Path) -> list[ImportJob]:
    """Every ``<class>/<video>.<ext>`` under ``videos_dir`` (class = parent folder, spaces -> _)."""
    if not videos_dir.is_dir():
        raise DataError(f"videos folder {videos_dir} does not exist")
    jobs = []
    for path in sorted(videos_dir.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        if path.parent == videos_dir:
            cls = "_unsorted"  # a video outside a class folder still gets imported, visibly
        else:
            cls = path.parent.name.replace(" ", "_")
        video = path.stem.replace(" ", "_")
        jobs.append(ImportJob(path, cls, video, out_rgb / cls / video))
    return jobs


def is_done(dest: Path, frames: int) -> bool:
    return len(list_frames(dest)) == frames


def uniform_indices(n: int, frames: int) -> list[int]:
    return [int(i) for i in np.linspace(0, n - 1, frames)]


def _count_frames(path: Path) -> int:
    """Exact frame count by demuxing packets (no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _decode_selected(path: Path, wanted: list[int]) -> tuple[dict[int, object], int]:
    """Decode the whole stream once, keeping the frames at ``wanted`` as PIL images."""
    import av

    keep = set(wanted)
    images: dict[int, object] = {}
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if n in keep:
                images[n] = frame.to_image()
            n += 1
    return images, n


def _resize(img, size: int | None):
    if not size:
        return img
    w, h = img.size
    s = size / min(w, h)
    if abs(s - 1.0) < 1e-9:
        return img
    from PIL import Image

    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def import_video(job: ImportJob, frames: int = 8, size: int | None = None) -> str:
    """Decode one video and write its frames atomically; returns "done" or "skipped"."""
    import av

    if is_done(job.dest, frames):
        return "skipped"
    try:
        try:
            with av.open(str(job.source)) as container:
                hint = int(container.streams.video[0].frames or 0)
        except IndexError:
            raise DataError("no video stream") from None
        n = hint or _count_frames(job.source)
        if n < 1:
            raise DataError("no frames")
        images, decoded = _decode_selected(job.source, uniform_indices(n, frames))
        if decoded != n:  # container metadata was wrong: decode again with the true count
            n = decoded
            if n < 1:
                raise DataError("no decodable frames")
            images, _ = _decode_selected(job.source, uniform_indices(n, frames))
        wanted = uniform_indices(n, frames)
        if any(i not in images for i in wanted):
            raise DataError(f"only {len(images)} of the sampled frames decoded")
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode: {exc}") from None

    job.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.dest.parent / f".{job.video}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for k, i in enumerate(wanted, 1):
            _resize(images[i], size).convert("RGB").save(tmp / f"{k:08d}.jpg", quality=JPEG_QUALITY)
        if job.dest.exists():  # an incomplete folder from another tool: replace it
            shutil.rmtree(job.dest)
        os.replace(tmp, job.dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "done"


def _run_one(job: ImportJob, frames: int, size: int | None) -> tuple[str, str]:
    try:
        return import_video(job, frames, size), ""
    except DataError as exc:
        return "failed", str(exc)
    except Exception as exc:  # noqa: BLE001  (a decoder crash on one file must not stop the others)
        return "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def import_videos(
    videos_dir: str | os.PathLike,
    out: str | os.PathLike,
    frames: int = 8,
    workers: int = 1,
    size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    jobs: Iterable[ImportJob] | None = None,
) -> ImportResult:
    """Import every video; ``progress(done, total)`` after each. Failures are collected."""
    if frames < 1:
        raise DataError(f"--frames must be >= 1, got {frames}")
    out_rgb = Path(out) / "rgb_l8"
    jobs = list(jobs) if jobs is not None else find_videos(Path(videos_dir), out_rgb)
    result = ImportResult()
    total = len(jobs)

    def record(job: ImportJob, status: str, msg: str) -> None:
        name = f"{job.class_name}/{job.video}"
        if status == "failed":
            result.failed.append((str(job.source), msg))
        else:
            (result.done if status == "done" else result.skipped).append(name)
        if progress:
            progress(len(result.done) + len(result.skipped) + len(result.failed), total)

    if workers <= 1:
        for job in jobs:
            record(job, *_run_one(job, frames, size))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(["av", "numpy", "mkdcore.data.importer"])) as pool:
            futures = {pool.submit(_run_one, job, frames, size): job for job in jobs}
            for fut in as_completed(futures):
                record(futures[fut], *fut.result())
    return result
