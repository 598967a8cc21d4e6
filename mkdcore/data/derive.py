"""The derive runner: compute a modality for every video of a dataset.

``derive_dataset(root, "flow", {...})`` walks every ``<class>/<video>`` of the RGB folder
and writes ``<root>/<name>_l8/<class>/<video>/`` with the RGB file names (spec 1.2).

Guarantees:

* **Resumable.** A video whose output folder holds every RGB file name is skipped.
* **Atomic per video.** Images are written into ``<name>_l8/.<class>-<video>.tmp-<pid>/``
  and the folder is renamed into place only when complete, so a kill (even SIGKILL)
  never leaves a half-written video that looks done; a later run deletes the
  leftover temporary folders of dead processes (:func:`mkdcore.fileio.clean_stale_temps`). Hidden (dot) folders are ignored by
  :mod:`mkdcore.data.layout`.
* **Tied to its options.** ``<name>_l8/.mkd-derived.json`` (the *stamp*) records the
  modality, its validated options and the plugin package version that made the folder,
  as a digest, plus a run id. A run whose digest differs (other options, a new plugin
  version) or that is forced never reuses a single old image: a folder mkd stamped is
  deleted and derived again; a folder of unknown origin (no stamp) is moved aside to
  ``<name>_l8.unstamped-<time>`` first (it may be the user's own data). ``existing``
  backends (ground truth already on disk) accept an unstamped folder and refuse one that
  mkd derived with a method. The stamp is rewritten, ``complete: true``, only when every
  video succeeded; the provenance check (:mod:`mkdcore.stages.provenance`) reads it to
  notice that another experiment re-derived the folder with other options.
* **Failures do not stop the run.** A video that cannot be read or derived is recorded
  in :class:`DeriveSummary` ``.failures``; the CLI lists them and exits non-zero.
  Errors that concern every video (a missing checkpoint, a missing library) are raised
  at once, as one-line :class:`~mkdcore.errors.MkdError`.

Execution: CPU algorithms (``modality.uses_device`` false) run on a process pool of
``workers`` processes (a forkserver, else spawn; one OpenCV/torch thread each); neural models run in this
process on ``device``, ``batch_videos`` videos per :meth:`Modality.derive_batch` call.
Backends that only accept images already on disk (``existing_only``) are verified.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from mkdcore.data import VideoKey
from mkdcore.data.layout import DatasetLayout, list_dirs
from mkdcore.device import resolve_device
from mkdcore.errors import ConfigError, DataError, MkdError
from mkdcore.fileio import clean_stale_temps, read_json_if_valid, temp_path
from mkdcore.modalities.base import Clip, Modality, check_images
from mkdcore.parallel import chunks, worker_context

#: folder holding, per sampled RGB frame, the original video's next frame (same names)
NEXT_FRAMES_MODALITY = "rgb_next"
#: the stamp file in a derived folder (hidden, so layout listing ignores it)
STAMP = ".mkd-derived.json"


@dataclass
class DeriveSummary:
    """What one derive run did. ``failures``: ``(class/video, one-line reason)``."""

    modality: str
    root: Path
    out_dir: Path
    videos: int = 0
    derived: int = 0
    skipped: int = 0
    verified: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: what happened to old output (removed because options changed or forced, moved aside)
    replaced: str | None = None
    #: run id written into the folder's stamp (None when the run did not complete)
    run: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def frames_per_s(self) -> float:
        """Frames derived (or verified) per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "root": str(self.root),
            "out_dir": str(self.out_dir),
            "videos": self.videos,
            "derived": self.derived,
            "skipped": self.skipped,
            "verified": self.verified,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames_per_s, 1),
            "failures": [list(f) for f in self.failures],
            "replaced": self.replaced,
            "run": self.run,
        }


# ----------------------------------------------------------------------- stamps
def options_record(modality_name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """What the stamp ties a folder to: modality, validated options (defaults filled in),
    and the plugin package and version that produce the images."""
    from mkdcore import api

    spec = api.get("modality", modality_name)
    opts = dict(options or {})
    if spec.options is not None:
        opts = spec.options.model_validate(opts).model_dump(mode="json")
    record = {"modality": modality_name, "options": opts, "package": spec.package, "version": spec.version}
    from mkdcore.config import stable_hash

    return {**record, "digest": stable_hash(record, 16)}


def read_stamp(out_dir: Path) -> dict[str, Any] | None:
    """The stamp of a derived folder, or None (no stamp, or unreadable: unknown origin)."""
    return read_json_if_valid(Path(out_dir) / STAMP)


def write_stamp(out_dir: Path, record: dict[str, Any], run: str, complete: bool) -> None:
    from mkdcore.fileio import atomic_write_json

    atomic_write_json(out_dir / STAMP, {**record, "run": run, "complete": complete,
                                        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, "derive stamp")


def _has_videos(out_dir: Path) -> bool:
    return out_dir.is_dir() and any(not e.name.startswith(".") for e in os.scandir(out_dir))


def prepare_folder(out_dir: Path, record: dict[str, Any], force: bool, existing_only: bool) -> str | None:
    """Make ``out_dir`` safe to (re)use for ``record``; returns a note of what was done
    to old output (None when nothing). See the module docstring for the rules."""
    stamp = read_stamp(out_dir)
    if existing_only:
        if stamp is not None and stamp.get("options", {}).get("backend") != "existing" and stamp["digest"] != record["digest"]:
            raise DataError(f"{out_dir} holds {record['modality']} frames derived by mkd "
                            f"({stamp.get('modality')} {stamp.get('options')}), not existing ground truth; "
                            "restore or re-render the originals, or configure the method that made them")
        return None
    if stamp is not None and stamp.get("digest") == record["digest"] and not force:
        return None  # same options: finished videos are kept, unfinished ones derived
    if not _has_videos(out_dir):
        return None
    if stamp is None:
        aside = out_dir.with_name(f"{out_dir.name}.unstamped-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(out_dir, aside)
        return f"{out_dir} had no stamp (unknown options): moved aside to {aside}"
    trash = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
    os.replace(out_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
    why = "forced" if force and stamp.get("digest") == record["digest"] else f"options changed (was {stamp.get('options')})"
    return f"{out_dir}: removed frames made earlier ({why})"


# ----------------------------------------------------------------------- walking
def list_videos(layout: DatasetLayout) -> list[VideoKey]:
    """Every ``(class, video)`` of the RGB folder, sorted."""
    rgb = layout.rgb_dir
    return [VideoKey(c, v) for c in layout.classes("rgb") for v in list_dirs(rgb / c)]


def is_complete(video_dir: Path, names: Sequence[str]) -> bool:
    """True when ``video_dir`` holds a non-empty file for every name."""
    try:
        return all((video_dir / n).stat().st_size > 0 for n in names)
    except (FileNotFoundError, NotADirectoryError):
        return False


# ----------------------------------------------------------------------- one video
def read_rgb(paths: Sequence[Path]) -> np.ndarray:
    """Frames as uint8 ``(T, H, W, 3)`` RGB numpy, decoded by OpenCV (libjpeg-turbo).

    Derivation works on numpy images (OpenCV, image processors), so this skips
    :func:`mkdcore.data.video.read_frames`' torch tensors (and keeps torch out of CPU
    workers); errors name the file the same way.
    """
    import cv2

    frames = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot decode frame {p}")
        if frames and bgr.shape != frames[0].shape:
            raise DataError(f"frame {p} is {bgr.shape[:2]}, other frames of the video are {frames[0].shape[:2]}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def read_clip(layout: DatasetLayout, key: VideoKey) -> Clip:
    """The RGB frames of ``key`` (and the next-frame neighbours when the dataset has them)."""
    paths = layout.frame_paths("rgb", key)
    if not paths:
        raise DataError(f"{layout.video_dir('rgb', key)}: no frames")
    names = [p.name for p in paths]
    next_frames = None
    next_dir = layout.video_dir(NEXT_FRAMES_MODALITY, key)
    if next_dir.is_dir():
        next_paths = [next_dir / n for n in names]
        missing = [p.name for p in next_paths if not p.is_file()]
        if missing:
            raise DataError(f"{next_dir}: missing neighbour frames {', '.join(missing)}")
        next_frames = read_rgb(next_paths)
    return Clip(frames=read_rgb(paths), next_frames=next_frames, key=(key.class_name, key.video), names=names)


def write_video(out_dir: Path, key: VideoKey, names: Sequence[str], images: Sequence[np.ndarray], jpeg_quality: int = 95) -> None:
    """Write one video's images atomically: a temporary folder renamed into place."""
    import cv2

    final = out_dir / key.class_name / key.video
    tmp = temp_path(out_dir / f"{key.class_name}-{key.video}")  # hidden: layout listings skip it
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, img in zip(names, images):
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if name.lower().endswith((".jpg", ".jpeg")) else []
            if not cv2.imwrite(str(tmp / name), bgr, params):
                raise DataError(f"cannot write {tmp / name}")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an incomplete folder not written by us: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify_video(layout: DatasetLayout, modality: str, key: VideoKey, names: Sequence[str]) -> int:
    """Check that an existing modality folder has every RGB frame name and decodes."""
    from mkdcore.data.video import read_frames

    vdir = layout.video_dir(modality, key)
    missing = [n for n in names if not (vdir / n).is_file()]
    if missing:
        raise DataError(f"{vdir}: missing {len(missing)} of {len(names)} frames ({missing[0]}...)")
    read_frames([vdir / n for n in names])
    return len(names)


def derive_video(modality: Modality, layout: DatasetLayout, key: VideoKey, out_dir: Path) -> int:
    """Derive and write one video; returns its frame count."""
    clip = read_clip(layout, key)
    _check_neighbours(modality, clip, layout, key)
    images = check_images(modality.name, clip, modality.derive(clip))
    write_video(out_dir, key, clip.names, images, modality.jpeg_quality)
    return len(images)


def _check_neighbours(modality: Modality, clip: Clip, layout: DatasetLayout, key: VideoKey) -> None:
    if modality.needs_neighbours and clip.next_frames is None:
        raise DataError(f"{layout.video_dir(NEXT_FRAMES_MODALITY, key)}: modality {modality.name!r} needs the next original frames")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if not isinstance(exc, MkdError) and text else (text.splitlines()[0] if text else type(exc).__name__)


# ----------------------------------------------------------------------- process pool
_worker_state: dict[str, Any] = {}


def _init_worker(payload: bytes, root: str, out_dir: str) -> None:
    """Worker start: rebuild the modality (pickled object, or by name from entry points)."""
    import cv2

    cv2.setNumThreads(1)
    obj = pickle.loads(payload)
    if isinstance(obj, tuple):  # (name, options): not picklable, rebuild from plugins
        from mkdcore.plugins import get_manager

        obj = get_manager().registry.create("modality", obj[0], **obj[1])
    if "torch" in sys.modules:  # a modality that uses torch on CPU: one thread per worker
        sys.modules["torch"].set_num_threads(1)
    obj.setup("cpu")
    _worker_state.update(modality=obj, layout=DatasetLayout(root), out_dir=Path(out_dir))


def _work(key: VideoKey) -> tuple[VideoKey, int, str | None]:
    try:
        n = derive_video(_worker_state["modality"], _worker_state["layout"], key, _worker_state["out_dir"])
        return key, n, None
    except Exception as exc:  # noqa: BLE001 - any plugin error is recorded, the run goes on
        return key, 0, _one_line(exc)


# ----------------------------------------------------------------------- the run
def build_modality(name: str, options: dict[str, Any] | None) -> Modality:
    from mkdcore.plugins import get_manager

    return get_manager().registry.create("modality", name, **(options or {}))


def derive_dataset(
    root: str | os.PathLike,
    modality_name: str,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
    workers: int = 1,
    progress: bool = True,
    batch_videos: int = 8,
    force: bool = False,
) -> DeriveSummary:
    """Derive ``modality_name`` for every video under ``root`` (see the module docstring).

    ``options`` are the modality plugin's options (validated by its own model);
    ``workers`` > 1 uses a process pool for CPU modalities; ``device`` is where neural
    modalities run; ``force`` derives every video again. Returns a :class:`DeriveSummary`;
    never raises for a single bad video.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    layout = DatasetLayout(root)
    modality = build_modality(modality_name, options)
    # CPU modalities never need torch here (their workers stay torch-free)
    device = "cpu" if device == "cpu" else str(resolve_device(device, "--device"))
    videos = list_videos(layout)
    if not videos:
        raise DataError(f"{layout.rgb_dir}: no <class>/<video> folders")
    existing_only = modality.existing_only
    out_dir = layout.modality_dir(modality_name)
    summary = DeriveSummary(modality=modality_name, root=layout.root, out_dir=out_dir, videos=len(videos))
    start = time.perf_counter()
    record = options_record(modality_name, options)
    if not existing_only:
        # load models / check libraries first: a missing checkpoint stops the run at once
        # (one line), before anything on disk is touched
        modality.setup(device if modality.uses_device else "cpu")
    with _folder_lock(out_dir):
        summary.replaced = prepare_folder(out_dir, record, force, existing_only)
        run = uuid.uuid4().hex
        if not existing_only or out_dir.is_dir():
            out_dir.mkdir(parents=True, exist_ok=True)
            write_stamp(out_dir, record, run, complete=False)
        _derive_videos(modality, modality_name, options, layout, out_dir, videos, summary, existing_only, device,
                       workers, progress, batch_videos)
        if not summary.failures and out_dir.is_dir():
            write_stamp(out_dir, record, run, complete=True)
            summary.run = run
    summary.seconds = time.perf_counter() - start
    summary.failures.sort()
    return summary


@contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    """One derive of a modality folder at a time (two experiments sharing a dataset
    root with other options would otherwise interleave their images)."""
    import fcntl

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir.parent / f".{out_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _derive_videos(modality: Modality, modality_name: str, options: dict[str, Any] | None, layout: DatasetLayout,
                   out_dir: Path, videos: list[VideoKey], summary: DeriveSummary, existing_only: bool, device: str,
                   workers: int, progress: bool, batch_videos: int) -> None:
    """Derive (or verify) every video not finished yet into ``out_dir``."""
    todo: list[tuple[VideoKey, list[str]]] = []
    for key in videos:
        names = [p.name for p in layout.frame_paths("rgb", key)]
        if not names:
            summary.failures.append((str(key), "no RGB frames"))
        elif existing_only or not is_complete(layout.video_dir(modality_name, key), names):
            todo.append((key, names))
        else:
            summary.skipped += 1
    if not existing_only and todo:
        clean_stale_temps(out_dir)

    with _Progress(progress, modality_name, len(videos), summary.skipped) as bar:
        if existing_only:
            for key, names in todo:
                _record(summary, bar, key, *_try(verify_video, layout, modality_name, key, names), verified=True)
        elif modality.uses_device or workers == 1 or len(todo) <= 1:
            _run_inprocess(modality, layout, out_dir, todo, summary, bar, batch_videos if modality.uses_device else 1)
        else:
            _run_pool(modality, modality_name, options or {}, layout, out_dir, todo, summary, bar, workers)


def _try(fn: Any, *args: Any) -> tuple[int, str | None]:
    """``(fn(*args), None)``, or ``(0, one-line reason)`` when it raises."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - recorded as this video's failure
        return 0, _one_line(exc)


def _record(summary: DeriveSummary, bar: _Progress, key: VideoKey, n: int, err: str | None, verified: bool = False) -> None:
    if err is not None:
        summary.failures.append((str(key), err))
    else:
        summary.frames += n
        if verified:
            summary.verified += 1
        else:
            summary.derived += 1
    bar.advance(n)


def _run_inprocess(modality: Modality, layout: DatasetLayout, out_dir: Path, todo: list[tuple[VideoKey, list[str]]],
                   summary: DeriveSummary, bar: _Progress, batch_videos: int) -> None:
    for chunk in chunks(todo, max(1, batch_videos)):
        clips: list[tuple[VideoKey, Clip]] = []
        for key, _ in chunk:
            try:
                clip = read_clip(layout, key)
                _check_neighbours(modality, clip, layout, key)
                clips.append((key, clip))
            except Exception as exc:  # noqa: BLE001 - recorded as this video's failure
                _record(summary, bar, key, 0, _one_line(exc))
        if not clips:
            continue
        try:
            results = modality.derive_batch([c for _, c in clips])
        except MkdError:
            raise
        except Exception:  # noqa: BLE001 - one bad video must not fail its batch: redo one by one
            results = None
        for i, (key, clip) in enumerate(clips):
            images = results[i] if results is not None else None
            _record(summary, bar, key, *_try(_finish_video, modality, out_dir, key, clip, images))


def _finish_video(modality: Modality, out_dir: Path, key: VideoKey, clip: Clip, images: list[np.ndarray] | None) -> int:
    """Check and write one video's images (deriving it alone when its batch failed)."""
    images = check_images(modality.name, clip, modality.derive(clip) if images is None else images)
    write_video(out_dir, key, clip.names, images, modality.jpeg_quality)
    return len(images)


def _run_pool(modality: Modality, name: str, options: dict[str, Any], layout: DatasetLayout, out_dir: Path,
              todo: list[tuple[VideoKey, list[str]]], summary: DeriveSummary, bar: _Progress, workers: int) -> None:
    try:
        payload = pickle.dumps(modality)
    except Exception:  # noqa: BLE001 - e.g. a modality defined in a notebook: rebuild by name
        payload = pickle.dumps((name, options))
    ctx = _pool_context()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(payload, str(layout.root), str(out_dir))) as pool:
        pending: set[Future] = set()
        keys = iter(k for k, _ in todo)
        for key in _take(keys, workers * 4):  # bounded queue: a kill loses little work
            pending.add(pool.submit(_work, key))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                _record(summary, bar, *fut.result())
                for key in _take(keys, 1):
                    pending.add(pool.submit(_work, key))


def _pool_context() -> multiprocessing.context.BaseContext:
    """A forkserver that preloads what every derive worker imports (mkdcore.parallel)."""
    return worker_context(["cv2", "numpy", "mkdcore.data.derive", "mkdcore.data.layout"])


def _take(it: Iterator[VideoKey], n: int) -> list[VideoKey]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


class _Progress:
    """A rich progress bar over videos that shows frames/s; silent when disabled."""

    def __init__(self, enabled: bool, name: str, total: int, already: int) -> None:
        from mkdcore.progress import ProgressReporter

        self.enabled = enabled
        self.name, self.total, self.already = name, total, already
        self.frames = 0
        self.start = time.perf_counter()
        # plain lines on stdout when it is not a terminal (logs), JSON events for the queue
        self.plain = ProgressReporter(f"derive:{name}", total, unit="videos", show=False) if enabled else None
        self.done = already

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("derive [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("videos"), TextColumn("{task.fields[fps]:>7.1f} frames/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.name, total=self.total, completed=self.already, fps=0.0)
            assert self.plain is not None
            self.plain.start(self.already)
        return self

    def advance(self, frames: int) -> None:
        self.frames += frames
        if self.enabled:
            fps = self.frames / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(self.task, advance=1, fps=fps)
            self.done += 1
            assert self.plain is not None
            self.plain.update(self.done, frames_per_s=round(fps, 1))

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)
            assert self.plain is not None
            self.plain.finish(self.done)
