"""The data layer: the seed's frame layout, split files, sampling, transforms, episodes.

Modules (one job each): :mod:`layout` (where things are on disk), :mod:`splits`
(split files -> :class:`SplitIndex`), :mod:`video` (frame decoding and temporal
sampling), :mod:`transforms` (spatial pipeline), :mod:`episodes` (seeded episode
sampling and frozen episode files), :mod:`features` (teacher ``.npy`` features),
:mod:`loader` (episodes as tensors through a DataLoader), :mod:`importer` (raw
videos -> frames) and :mod:`checker` (``mkd data check``). Submodules are imported
lazily so that ``import mkdcore.data`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import NamedTuple


class VideoKey(NamedTuple):
    """A video, everywhere: (class folder name, video id). Never a position."""

    class_name: str
    video: str

    def __str__(self) -> str:
        return f"{self.class_name}/{self.video}"


__all__ = ["VideoKey"]
