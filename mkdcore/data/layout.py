"""Where frames, modalities and split files live in a dataset root.

The seed's own documents spell the RGB folder three ways (``rgb_l8/``,
``l8/rgb_l8/`` and a bare ``l8/``); all are accepted, in that order of preference.
Derived modalities sit beside the RGB folder as ``<name>_l8`` with the same
``<class>/<video>/<frame>`` names, because the original loaders find them by
replacing the ``rgb_l8`` path component.

Names in split files and folder names are matched by :func:`match_key`: case is
ignored and a space equals an underscore, so a split line ``Apply Eye Makeup/v_x`` or
``apply_eye_makeup/v_x`` finds the folder ``Apply Eye Makeup/v_x`` and a line with
spaces finds a folder made by ``mkd data import`` (which writes underscores). The
folder name on disk is what keys a video (:class:`~mkdcore.data.VideoKey`); two
folders with the same match key (``A B`` and ``a_b``) are an error, never a guess.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from mkdcore.data import VideoKey
from mkdcore.errors import DataError

#: RGB folder spellings, most explicit first
RGB_SPELLINGS: tuple[str, ...] = ("rgb_l8", "l8/rgb_l8", "l8")
FRAME_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
#: split folders shipped in the package (mkdcore/splits/<name>/)
SHIPPED_SPLITS_DIR = Path(__file__).resolve().parent.parent / "splits"
WHICH: tuple[str, ...] = ("train", "val", "test")


def shipped_splits() -> list[str]:
    """Names of the split folders shipped with mkd (ucf_ARN, hmdb_ARN, ...)."""
    if not SHIPPED_SPLITS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_SPLITS_DIR.iterdir() if p.is_dir())


def is_frame_name(name: str) -> bool:
    return name.lower().endswith(FRAME_SUFFIXES) and not name.startswith(".")


def list_frames(video_dir: Path) -> list[Path]:
    """Sorted frame files of one video folder ([] when the folder is missing)."""
    try:
        with os.scandir(video_dir) as it:
            names = sorted(e.name for e in it if is_frame_name(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [video_dir / n for n in names]


def match_key(name: str) -> str:
    """How split-file names meet folder names: case-folded, spaces as underscores."""
    return name.strip().casefold().replace(" ", "_")


def folder_index(names: list[str], where: Path) -> dict[str, str]:
    """``{match_key(name): name}`` of folder names; ``DataError`` when two share a key."""
    index: dict[str, str] = {}
    for name in names:
        other = index.setdefault(match_key(name), name)
        if other != name:
            raise DataError(f"{where}: folders {other!r} and {name!r} differ only in case or space/underscore; "
                            "split lines cannot tell them apart: rename one")
    return index


def list_dirs(path: Path) -> list[str]:
    """Sorted visible sub-folder names ([] when ``path`` is missing)."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


class DatasetLayout:
    """A dataset root in the seed layout ``<root>/<modality>_l8/<class>/<video>/*.jpg``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DatasetLayout({str(self.root)!r})"

    @cached_property
    def rgb_dir(self) -> Path:
        """The RGB frame folder; ``DataError`` naming the root when none exists."""
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist")
        for spelling in RGB_SPELLINGS:
            candidate = self.root / spelling
            if candidate.is_dir():
                return candidate
        raise DataError(f"{self.root}: no RGB frame folder (expected one of {', '.join(s + '/' for s in RGB_SPELLINGS)})")

    @property
    def bare_l8(self) -> bool:
        """True when RGB classes sit directly under ``l8/`` (modality folders may sit there too)."""
        return self.rgb_dir == self.root / "l8"

    def classes(self, modality: str = "rgb") -> list[str]:
        """Class folder names of a modality (``*_l8`` folders excluded in the bare ``l8/`` spelling)."""
        names = list_dirs(self.modality_dir(modality))
        if modality == "rgb" and self.bare_l8:
            names = [n for n in names if not n.endswith("_l8")]
        return names

    def modality_candidates(self, name: str) -> list[Path]:
        """Where a derived modality may live, beside the RGB folder first."""
        folder = f"{name}_l8"
        out = [self.rgb_dir.parent / folder, self.root / folder, self.root / "l8" / folder]
        return list(dict.fromkeys(out))

    def modality_dir(self, name: str) -> Path:
        """``rgb`` -> :attr:`rgb_dir`; else the existing ``<name>_l8`` beside it (or where it would go)."""
        if name == "rgb":
            return self.rgb_dir
        candidates = self.modality_candidates(name)
        for c in candidates:
            if c.is_dir():
                return c
        return candidates[0]

    def modalities(self) -> list[str]:
        """Names of the modalities present (``rgb`` first)."""
        found = {"rgb"}
        for base in {self.rgb_dir.parent, self.root, self.root / "l8"}:
            for d in list_dirs(base):
                if d.endswith("_l8") and d != "rgb_l8":
                    found.add(d[: -len("_l8")])
        return ["rgb"] + sorted(found - {"rgb"})

    def video_dir(self, modality: str, key: VideoKey) -> Path:
        return self.modality_dir(modality) / key.class_name / key.video

    def frame_paths(self, modality: str, key: VideoKey) -> list[Path]:
        """Sorted ``*.jpg``/``*.png`` frames of one video ([] if the folder is missing)."""
        return list_frames(self.video_dir(modality, key))

    # ------------------------------------------------------------------ splits
    def split_dir(self, split: str) -> Path:
        """``<root>/splits/<split>``, or the shipped copy when the root has none."""
        local = self.root / "splits" / split
        if local.is_dir():
            return local
        shipped = SHIPPED_SPLITS_DIR / split
        return shipped if shipped.is_dir() else local

    def split_file(self, split: str, which: str, split_id: str = "03") -> Path:
        """``<root>/splits/<split>/<which>list<split_id>.txt`` (shipped copy as fallback)."""
        if which not in WHICH:
            raise DataError(f"split part {which!r} is not one of {', '.join(WHICH)}")
        return self.split_dir(split) / f"{which}list{split_id}.txt"

    def split_ids(self, split: str) -> list[str]:
        """The ids ``NN`` of the ``{train,val,test}listNN.txt`` files in the split folder."""
        d = self.split_dir(split)
        if not d.is_dir():
            return []
        ids = {p.name[len(w) + 4 : -4] for w in WHICH for p in d.glob(f"{w}list*.txt")}
        return sorted(ids)

    def split_names(self) -> list[str]:
        """Split folders under ``<root>/splits/``."""
        return list_dirs(self.root / "splits")

    def default_split(self) -> str:
        """The only split folder of the root; ``DataError`` listing choices otherwise."""
        names = self.split_names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise DataError(
                f"{self.root / 'splits'}: no split folder; pass --split (shipped: {', '.join(shipped_splits())})"
            )
        raise DataError(f"{self.root / 'splits'} holds several splits; pass --split (one of {', '.join(names)})")

    def resolve_split_id(self, split: str, split_id: str | None) -> str:
        """``split_id`` as given, or the single id found in the folder (``03`` by default)."""
        if split_id is not None:
            return split_id
        ids = self.split_ids(split)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise DataError(f"{self.split_dir(split)}: no {{train,val,test}}listNN.txt split files")
        return "03" if "03" in ids else ids[0]
