"""Raw videos -> the frame layout ``<out>/rgb_l8/<class>/<video>/00000001.jpg ...``.

Frames are chosen as ``int(linspace(0, n-1, frames))`` (the only frame-reduction
script of the seed, spec 1.1). Each video is written into a hidden temporary folder
and renamed into place, so a folder with the final name is always complete: that is
what makes the import resumable and keeps a crash from leaving a "done" half video.
Decoding uses PyAV (FFmpeg); failures are collected, never fatal for the others.

A video with fewer decodable frames than ``frames`` (a short clip, or a truncated file
whose container claims more) still gets ``frames`` frames, some repeated, as the seed
did; the import says so, one warning per video naming how many frames it really had,
and ``min_frames`` refuses such videos instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mkdcore.data.layout import list_frames
from mkdcore.errors import DataError
from mkdcore.fileio import atomic_dir
from mkdcore.parallel import worker_context

VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ImportJob:
    source: Path
    class_name: str
    video: str
    dest: Path


@dataclass(frozen=True)
class Imported:
    """What :func:`import_video` did: ``status`` "done" or "skipped"; for a done video the
    frames it really had and the count its container claimed (0: none claimed)."""

    status: str
    decoded: int = 0
    claimed: int = 0

    def warning(self, frames: int) -> str | None:
        """Why the ``frames`` written frames are not all distinct, or None. (A container
        that merely over-counts is common and harmless when enough frames decode.)"""
        if self.status != "done" or self.decoded >= frames:
            return None
        said = f" (its container says {self.claimed})" if self.claimed > self.decoded else ""
        return (f"only {self.decoded} frames decode{said}; {frames - self.decoded} of the {frames} written "
                "frames are repeats (refuse such videos with --min-frames)")


@dataclass
class ImportResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: (source video, why) for imported videos whose frames are not all distinct
    warnings: list[tuple[str, str]] = field(default_factory=list)


def find_videos(videos_dir: Path, out_rgb: Path) -> list[ImportJob]:
    """Every ``<class>/<video>.<ext>`` under ``videos_dir`` (class = parent folder, spaces -> _)."""
    if not videos_dir.is_dir():
        raise DataError(f"videos folder {videos_dir} does not exist")
    jobs = _find(videos_dir, out_rgb)
    if not jobs:
        raise DataError(f"no videos found under {videos_dir} (looked for <class>/<video> with suffix "
                        f"{', '.join(VIDEO_SUFFIXES)})")
    return jobs


def _find(videos_dir: Path, out_rgb: Path) -> list[ImportJob]:
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


def import_video(job: ImportJob, frames: int = 8, size: int | None = None, min_frames: int = 1) -> Imported:
    """Decode one video and write its frames atomically; a video with fewer than
    ``min_frames`` decodable frames is refused (``DataError``)."""
    import av

    if is_done(job.dest, frames):
        return Imported("skipped")
    try:
        try:
            with av.open(str(job.source)) as container:
                hint = int(container.streams.video[0].frames or 0)
        except IndexError:
            raise DataError("no video stream") from None
        claimed = hint
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
        if n < min_frames:
            said = f" (its container says {claimed})" if claimed > n else ""
            raise DataError(f"only {n} frames decode{said}, fewer than --min-frames {min_frames}")
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode: {exc}") from None

    # a hidden temp folder swapped in whole (an incomplete folder from another tool is
    # replaced); a full disk is one line and leaves no temp folder
    with atomic_dir(job.dest, f"frames of video {job.video}") as tmp:
        for k, i in enumerate(wanted, 1):
            _resize(images[i], size).convert("RGB").save(tmp / f"{k:08d}.jpg", quality=JPEG_QUALITY)
    return Imported("done", decoded=n, claimed=claimed)


def _run_one(job: ImportJob, frames: int, size: int | None, min_frames: int) -> tuple[str, str]:
    """(status, message): the failure, or for a done video the warning ("" when none)."""
    try:
        imported = import_video(job, frames, size, min_frames)
        return imported.status, imported.warning(frames) or ""
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
    min_frames: int = 1,
) -> ImportResult:
    """Import every video; ``progress(done, total)`` after each. Failures are collected;
    videos shorter than ``min_frames`` decodable frames fail, shorter than ``frames`` warn."""
    if frames < 1:
        raise DataError(f"--frames must be >= 1, got {frames}")
    if min_frames < 1:
        raise DataError(f"--min-frames must be >= 1, got {min_frames}")
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
            if msg:
                result.warnings.append((str(job.source), msg))
        if progress:
            progress(len(result.done) + len(result.skipped) + len(result.failed), total)

    if workers <= 1:
        for job in jobs:
            record(job, *_run_one(job, frames, size, min_frames))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(["av", "numpy", "mkdcore.data.importer"])) as pool:
            futures = {pool.submit(_run_one, job, frames, size, min_frames): job for job in jobs}
            for fut in as_completed(futures):
                record(futures[fut], *fut.result())
    return result
