"""``mkd data check``: does a dataset root match its split files, frame by frame?

Made to be fast on real-size trees: it never decodes an image. A frame counts as
readable when its signature and end marker are present (JPEG SOI ... EOI, PNG
signature ... IEND), which catches empty, truncated and non-image files with four
system calls; feature files are checked from their ``.npy`` header only. Folders are
scanned once and frame checks run on a thread pool (file I/O releases the GIL).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkdcore.data import VideoKey
from mkdcore.data.features import FeatureStore, npy_shape
from mkdcore.data.layout import WHICH, DatasetLayout, list_dirs, list_frames, match_key
from mkdcore.data.splits import SplitIndex, parse_split_lines, resolve_split
from mkdcore.errors import DataError

TAIL_BYTES = 64


def frame_problem(path: Path) -> str | None:
    """Why a frame cannot be decoded (cheap signature/end-marker check), or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return exc.strerror or "cannot open"
    try:
        size = os.fstat(fd).st_size
        head = os.read(fd, 8)
        tail = os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES))
    finally:
        os.close(fd)
    if size == 0:
        return "empty file"
    if head[:2] == b"\xff\xd8":
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end marker)"
    if head == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in tail else "truncated PNG (no IEND)"
    return "not a JPEG or PNG image"


@dataclass
class VideoStatus:
    key: VideoKey
    frames: list[str]
    unreadable: list[tuple[str, str]]


def _scan_video(video_dir: Path, key: VideoKey) -> VideoStatus:
    paths = list_frames(video_dir)
    bad = [(p.name, why) for p in paths if (why := frame_problem(p))]
    return VideoStatus(key, [p.name for p in paths], bad)


@dataclass
class SplitReport:
    """Counts for one split part; ``classes``/``videos`` are those listed AND found."""

    which: str
    present: bool = False
    classes_listed: int = 0
    videos_listed: int = 0
    classes: int = 0
    videos: int = 0
    missing_videos: int = 0
    too_few_frames: int = 0
    unreadable_videos: int = 0
    modality_mismatch: int = 0
    bad_features: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("which")
        return d


@dataclass
class CheckReport:
    root: Path
    split: str
    split_id: str
    splits: dict[str, SplitReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {"splits": {w: r.as_dict() for w, r in self.splits.items()}, "errors": list(self.errors)}


class Checker:
    """Runs every check of one root and split; see :func:`check_dataset`."""

    def __init__(self, layout: DatasetLayout, split: str, split_id: str, frames: int, workers: int) -> None:
        self.layout, self.split, self.split_id, self.frames, self.workers = layout, split, split_id, frames, workers
        self.report = CheckReport(layout.root, split, split_id)

    def error(self, msg: str) -> None:
        self.report.errors.append(msg)

    def run(self) -> CheckReport:
        rgb = self.layout.rgb_dir
        self.report.modalities = self.layout.modalities()
        feature_root = self.layout.root / "feature"
        self.report.features = list_dirs(feature_root)
        for cls in self.layout.classes("rgb"):
            if not list_dirs(rgb / cls):
                self.error(f"empty class folder {rgb / cls}")
        listed_classes: dict[str, set[str]] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for which in WHICH:
                rep = SplitReport(which)
                self.report.splits[which] = rep
                path = self.layout.split_file(self.split, which, self.split_id)
                if not path.is_file():
                    if which != "val":  # the original protocol never reads val lists
                        self.error(f"split file {path} does not exist")
                    continue
                rep.present = True
                lines = parse_split_lines(path)
                if not lines:
                    self.error(f"split file {path} lists no videos (expected '<class>/<video>' lines)")
                listed_classes[which] = {match_key(c) for c, _ in lines}
                index = resolve_split(self.layout, self.split, which, self.split_id)
                self.check_split(rep, lines, index, pool)
        names = [w for w in WHICH if w in listed_classes]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = listed_classes[a] & listed_classes[b]
                if shared:
                    self.error(f"classes in both {a} and {b}: {', '.join(sorted(shared)[:5])}")
        return self.report

    def check_split(self, rep: SplitReport, lines: list[tuple[str, str]], index: SplitIndex, pool: ThreadPoolExecutor) -> None:
        rep.classes_listed = len({match_key(c) for c, _ in lines})
        rep.videos_listed = len({(match_key(c), match_key(v)) for c, v in lines})
        rep.classes, rep.videos = len(index.classes), index.num_videos
        rep.missing_videos = len(index.missing)
        folders = {match_key(c) for c in self.layout.classes("rgb")}
        missing_by_class = Counter(m.split("/")[0] for m in index.missing)
        for cls, count in sorted(missing_by_class.items()):
            if match_key(cls) not in folders:
                self.error(f"{rep.which}: class folder {cls} ({count} listed videos) not found under {self.layout.rgb_dir}")
            else:
                for m in index.missing:
                    if m.split("/")[0] == cls:
                        self.error(f"{rep.which}: listed video {m} not found under {self.layout.rgb_dir}")
        keys = index.keys()
        rgb = self.layout.rgb_dir
        statuses = list(pool.map(lambda k: _scan_video(rgb / k.class_name / k.video, k), keys, chunksize=64))
        rgb_frames = {s.key: s.frames for s in statuses}
        for s in statuses:
            if s.unreadable:
                rep.unreadable_videos += 1
                name, why = s.unreadable[0]
                self.error(f"{rep.which}: video {s.key}: unreadable frame {name} ({why})" + (f" and {len(s.unreadable) - 1} more" if len(s.unreadable) > 1 else ""))
            if len(s.frames) < self.frames:
                rep.too_few_frames += 1
                self.error(f"{rep.which}: video {s.key} has {len(s.frames)} frames, needs {self.frames}")
        for m in self.report.modalities[1:]:
            mdir = self.layout.modality_dir(m)
            mstatus = pool.map(lambda k, d=mdir: _scan_video(d / k.class_name / k.video, k), keys, chunksize=64)
            for s in mstatus:
                if s.frames != rgb_frames[s.key] or s.unreadable:
                    rep.modality_mismatch += 1
                    if s.unreadable:
                        why = f"unreadable frame {s.unreadable[0][0]} ({s.unreadable[0][1]})"
                    else:
                        why = f"{len(s.frames)} frames vs {len(rgb_frames[s.key])} rgb frames" if len(s.frames) != len(rgb_frames[s.key]) else "frame names differ from rgb"
                    self.error(f"{rep.which}: {m}_l8 video {s.key}: {why}")
        for name in self.report.features:
            self.check_features(rep, FeatureStore(self.layout.root / "feature" / name, frames=self.frames), name, keys)

    def check_features(self, rep: SplitReport, store: FeatureStore, name: str, keys: list[VideoKey]) -> None:
        dims: dict[VideoKey, int] = {}
        for k in keys:
            path = store.path(k)
            if not path.is_file():
                rep.bad_features += 1
                self.error(f"{rep.which}: feature {name}: no file for video {k}")
                continue
            try:
                _, dims[k] = store.check_shape(k, npy_shape(path), path)
            except DataError as exc:
                rep.bad_features += 1
                self.error(f"{rep.which}: feature {name}: {exc}")
            except (ValueError, OSError) as exc:
                rep.bad_features += 1
                self.error(f"{rep.which}: feature {name}: video {k}: unreadable .npy ({exc})")
        if dims:
            common = Counter(dims.values()).most_common(1)[0][0]
            for k, d in dims.items():
                if d != common:
                    rep.bad_features += 1
                    self.error(f"{rep.which}: feature {name}: video {k} has width {d}, the others {common}")


def check_dataset(
    root: str | os.PathLike,
    split: str | None = None,
    split_id: str | None = None,
    frames: int = 8,
    workers: int = 8,
) -> CheckReport:
    """Check ``root`` against split ``split`` (default: the only folder under ``<root>/splits``)."""
    layout = DatasetLayout(root)
    layout.rgb_dir  # noqa: B018  (raises a one-line DataError when the root is wrong)
    split = split or layout.default_split()
    if not layout.split_dir(split).is_dir():
        raise DataError(f"split {split!r} not found in {layout.root / 'splits'} nor among the shipped splits")
    split_id = layout.resolve_split_id(split, split_id)
    return Checker(layout, split, split_id, frames, workers).run()
