"""Support features: the labelled examples encoded once.

``support.npz`` (numpy, no pickles) holds ``format``, ``fingerprint`` (of the model that
encoded it, :func:`~mkdcore.predict.model.fingerprint_of`), ``classes`` (W names, label
order), ``labels`` (Ns,), ``clips`` (Ns source paths, for people), ``frames`` and
``features`` ``(Ns, T, W)`` (the encoder's per-video features, branches concatenated). A file made by another model
(or another version of the same model) is refused: its features live in another space.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mkdcore.errors import DataError
from mkdcore.fileio import CorruptFileError, atomic_save, first_line
from mkdcore.names import class_name
from mkdcore.predict.clips import read_clip, scan_support
from mkdcore.predict.model import Predictor

FORMAT = 1
#: clips encoded per backbone call when building support (bounds memory)
BATCH_CLIPS = 8


@dataclass
class SupportSet:
    classes: list[str]
    labels: torch.Tensor  # (Ns,) long, label c = classes[c]
    features: torch.Tensor  # (Ns, T, W)
    clips: list[str]
    fingerprint: str
    frames: int

    @property
    def way(self) -> int:
        return len(self.classes)

    def shots(self) -> dict[str, int]:
        counts = Counter(int(i) for i in self.labels)
        return {c: counts[i] for i, c in enumerate(self.classes)}

    def check_model(self, predictor: Predictor, source: Path) -> None:
        """Refuse features another model computed (one line)."""
        if self.fingerprint != predictor.fingerprint:
            raise DataError(f"support features {source} were computed by another model (fingerprint "
                            f"{self.fingerprint[:12]}, {predictor.path} is {predictor.fingerprint[:12]}): "
                            f"rebuild them with `mkd support build DIR --model {predictor.path} -o {source}`")

    def save(self, path: Path) -> None:
        arrays = {"format": np.array(FORMAT), "fingerprint": np.array(self.fingerprint), "classes": np.array(self.classes),
                  "labels": self.labels.numpy(), "clips": np.array(self.clips), "frames": np.array(self.frames)}
        arrays["features"] = self.features.numpy()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_save(Path(path), write, "support features")


def build_support(predictor: Predictor, root: Path, progress: Callable[[int, int], None] | None = None) -> SupportSet:
    """Encode every example clip of ``root/<class>/<clip>`` (one line on bad input)."""
    classes = scan_support(root)
    items = [(label, clip) for label, cls in enumerate(classes) for clip in cls.clips]
    transform = predictor.contract.transform()
    parts: list[torch.Tensor] = []
    for start in range(0, len(items), BATCH_CLIPS):
        batch = items[start : start + BATCH_CLIPS]
        clips = torch.stack([transform({"x": read_clip(p, predictor.contract.frames)})["x"] for _, p in batch])
        parts.append(predictor.encode(clips).float())
        if progress:
            progress(min(start + BATCH_CLIPS, len(items)), len(items))
    return SupportSet(classes=[c.name for c in classes], labels=torch.tensor([lab for lab, _ in items], dtype=torch.long),
                      features=torch.cat(parts), clips=[str(p) for _, p in items],
                      fingerprint=predictor.fingerprint, frames=predictor.contract.frames)


def load_support(path: Path) -> SupportSet:
    """A ``support.npz``; anything that is not one mkd wrote is one line naming it."""
    path = Path(path)
    remedy = "make it with `mkd support build DIR --model MODEL -o FILE`"
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format"])
            if version > FORMAT:
                raise CorruptFileError(f"support features {path} have format {version}, newer than this mkd "
                                       f"reads ({FORMAT}): upgrade mkd or rebuild them")
            support = SupportSet(classes=[class_name(str(c)) for c in data["classes"]],
                                 labels=torch.from_numpy(data["labels"].astype(np.int64)),
                                 features=torch.from_numpy(np.asarray(data["features"], dtype=np.float32)),
                                 clips=[str(c) for c in data["clips"]], fingerprint=str(data["fingerprint"]),
                                 frames=int(data["frames"]))
    except FileNotFoundError:
        raise CorruptFileError(f"support features {path} do not exist; {remedy}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise CorruptFileError(f"support features {path} cannot be read ({first_line(exc)}); {remedy}") from None
    _check_shapes(support, path, remedy)
    return support


def _check_shapes(s: SupportSet, path: Path, remedy: str) -> None:
    n = s.labels.shape[0]
    ok = (s.labels.ndim == 1 and len(s.clips) == n and len(s.classes) >= 2
          and s.features.ndim == 3 and tuple(s.features.shape[:2]) == (n, s.frames)
          and n and int(s.labels.min()) >= 0 and set(s.labels.tolist()) == set(range(len(s.classes))))
    if not ok:
        raise CorruptFileError(f"support features {path} are inconsistent (labels, classes and feature shapes "
                               f"do not agree); {remedy}")
