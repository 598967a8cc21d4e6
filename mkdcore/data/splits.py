"""Split files (``<class>/<video>`` lines) resolved against the frame folders.

As in the original protocol, spaces in class names become underscores; a line meets
its folders by :func:`mkdcore.data.layout.match_key` (case ignored, space == underscore,
on both sides), so ``Apply Eye Makeup/v_x`` and ``Apply_Eye_Makeup/v_x`` both find the
folder ``Apply Eye Makeup/v_x`` or ``Apply_Eye_Makeup/v_x``. The video id is the last
path component of the line; every component must be a plain folder name
(:mod:`mkdcore.names`), so ``../x`` is an error naming the file and line, never a path
out of the dataset. The class set of a split is the set of classes its file names.
Nothing is dropped silently: videos listed but absent are reported, and a split file
that lists no video is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mkdcore.data import VideoKey
from mkdcore.data.layout import DatasetLayout, folder_index, list_dirs, match_key
from mkdcore.errors import DataError
from mkdcore.fileio import read_text
from mkdcore.names import UnsafeNameError, class_name, folder_name, video_name


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
    text = read_text(path, "split file")  # missing, unreadable or not UTF-8: one line naming it
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\\", "/").split("/") if p]
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected '<class>/<video>', got {line!r}")
        cls, vid = parts[0].strip(), parts[-1].strip()
        try:
            class_name(cls)
            video_name(vid)
            for middle in parts[1:-1]:
                folder_name(middle.strip(), "path component")
        except UnsafeNameError as exc:
            raise DataError(f"{path}:{lineno}: {exc}") from None
        out.append((cls.replace(" ", "_"), vid))
    return out


def resolve_split(layout: DatasetLayout, split: str, which: str, split_id: str = "03") -> SplitIndex:
    """Match a split file to the RGB folders; missing videos are listed in ``.missing``."""
    path = layout.split_file(split, which, split_id)
    lines = parse_split_lines(path)
    rgb = layout.rgb_dir
    class_folders = folder_index(layout.classes("rgb"), rgb)
    video_folders: dict[str, dict[str, str]] = {}
    videos: dict[str, set[VideoKey]] = {}
    missing: list[str] = []
    for cls, vid in lines:
        folder = class_folders.get(match_key(cls))
        if folder is None:
            missing.append(f"{cls}/{vid}")
            continue
        if folder not in video_folders:
            video_folders[folder] = folder_index(list_dirs(rgb / folder), rgb / folder)
        actual = video_folders[folder].get(match_key(vid))
        if actual is None:
            missing.append(f"{cls}/{vid}")
            continue
        videos.setdefault(folder, set()).add(VideoKey(folder, actual))
    classes = sorted(videos)
    return SplitIndex(classes, {c: sorted(videos[c]) for c in classes}, path, missing)


def load_split(layout: DatasetLayout, split: str, which: str, split_id: str = "03") -> SplitIndex:
    """The split part ``which`` (train|val|test); ``DataError`` naming missing videos
    or an empty split file."""
    index = resolve_split(layout, split, which, split_id)
    if not index.num_videos and not index.missing:
        raise DataError(f"split file {index.path} lists no videos (expected '<class>/<video>' lines)")
    if index.missing:
        shown = ", ".join(index.missing[:3]) + (", ..." if len(index.missing) > 3 else "")
        raise DataError(
            f"{index.path}: {len(index.missing)} listed video(s) not found under {layout.rgb_dir}: {shown}"
        )
    return index
