"""Split files (``<class>/<video>`` lines) resolved against the frame folders.

As in the original protocol, spaces in class names become underscores and matching
is case-insensitive (class folder and video folder); the video id is the last path
component of the line. The class set of a split is the set of classes its file
names. Nothing is dropped silently: videos listed but absent are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mkdcore.data import VideoKey
from mkdcore.data.layout import DatasetLayout, list_dirs
from mkdcore.errors import DataError


@dataclass
class SplitIndex:
    """The videos of one split part, keyed by folder names on disk."""

    classes: list[str]
    videos: dict[str, list[VideoKey]]
    path: Path | None = None
    #: listed lines whose video (or class) folder does not exist, as written in the file
    missing: list[str] = field(default_factory=list)

    def keys(self) -> list[VideoKey]:
        return [k for c in self.classes for k in self.videos[c]]

    @property
    def num_videos(self) -> int:
        return sum(len(v) for v in self.videos.values())


def parse_split_lines(path: Path) -> list[tuple[str, str]]:
    """``(class, video)`` per non-empty line, class spaces -> underscores."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"split file {path} does not exist") from None
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\\", "/").split("/") if p]
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected '<class>/<video>', got {line!r}")
        out.append((parts[0].strip().replace(" ", "_"), parts[-1].strip()))
    return out


def resolve_split(layout: DatasetLayout, split: str, which: str, split_id: str = "03") -> SplitIndex:
    """Match a split file to the RGB folders; missing videos are listed in ``.missing``."""
    path = layout.split_file(split, which, split_id)
    lines = parse_split_lines(path)
    rgb = layout.rgb_dir
    class_folders = {c.lower(): c for c in layout.classes("rgb")}
    video_folders: dict[str, dict[str, str]] = {}
    videos: dict[str, set[VideoKey]] = {}
    missing: list[str] = []
    for cls, vid in lines:
        folder = class_folders.get(cls.lower())
        if folder is None:
            missing.append(f"{cls}/{vid}")
            continue
        if folder not in video_folders:
            video_folders[folder] = {v.lower(): v for v in list_dirs(rgb / folder)}
        actual = video_folders[folder].get(vid.lower())
        if actual is None:
            missing.append(f"{cls}/{vid}")
            continue
        videos.setdefault(folder, set()).add(VideoKey(folder, actual))
    classes = sorted(videos)
    return SplitIndex(classes, {c: sorted(videos[c]) for c in classes}, path, missing)


def load_split(layout: DatasetLayout, split: str, which: str, split_id: str = "03") -> SplitIndex:
    """The split part ``which`` (train|val|test); ``DataError`` naming missing videos."""
    index = resolve_split(layout, split, which, split_id)
    if index.missing:
        shown = ", ".join(index.missing[:3]) + (", ..." if len(index.missing) > 3 else "")
        raise DataError(
            f"{index.path}: {len(index.missing)} listed video(s) not found under {layout.rgb_dir}: {shown}"
        )
    return index
