"""Distil from released teacher files: stored features and the teacher that scores them.

The authors released, per dataset, the MFM's fused features (``feature/mm_features``),
RGB-only teacher features (``feature/rgb_features``) and the teacher checkpoint
(``teacher_model/``). With ``teacher: {features, checkpoint}`` the student stages read
these instead of running derive, teacher and fuse stages:

* :func:`teacher_head`: the frozen few-shot head over stored features, from an mkd model
  folder (what ``mkd convert`` writes; any model with a ``head``) or straight from an
  original checkpoint file (the MFM's ``bracnch.transformers.0`` TRX; a per-modality
  Baseline teacher's parameter-free mean-distance head);
* :func:`check_features`: every video the student reads has a feature of the right shape
  and a float dtype, checked from the ``.npy`` headers before any training; one line
  names the first offenders and the count;
* :func:`fingerprint`: the provenance probe of both (file names, sizes, modification
  times), so replacing a feature file or the checkpoint makes the student stale.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from mkdcore.convert import ConvertError
from mkdcore.data import VideoKey
from mkdcore.data.features import FeatureStore
from mkdcore.errors import DataError

if TYPE_CHECKING:
    from mkdcore.config import ExperimentConfig

#: offenders spelled out before "and N more"
SHOWN = 3


def teacher_files(cfg: "ExperimentConfig") -> tuple[Path, Path]:
    """``(features, checkpoint)`` of ``cfg.teacher``, absolute. Relative paths are read
    under ``data.root``: the released files live in the dataset folder
    (``<root>/feature/mm_features``, ``<root>/teacher_model``), so one base config serves
    every dataset root."""
    t = cfg.teacher
    assert t.features is not None and t.checkpoint is not None  # the config validator pairs them
    root = Path(cfg.data.root)
    return tuple((p if p.is_absolute() else root / p).resolve() for p in (Path(t.features), Path(t.checkpoint)))  # type: ignore[return-value]


def checkpoint_file(path: Path) -> Path:
    """A model folder or checkpoint file as given, or the one ``.pt`` file of a folder such
    as the released ``teacher_model/``."""
    from mkdcore.models.folder import model_dir_of

    if not path.is_dir() or model_dir_of(path) is not None:
        return path
    found = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConvertError(f"teacher.checkpoint {path}: a folder with no model.json and no .pt checkpoint in it")
    raise ConvertError(f"teacher.checkpoint {path}: holds {len(found)} checkpoints ({_first([p.name for p in found])}); "
                       f"name the one to use")


def teacher_head(path: Path, frames: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The frozen (eval, no grad) head of the teacher at ``path`` as a model over stored
    features: ``(support (Ns,T,D), labels, queries (Nq,T,D)) -> {"logits", "relations"}``."""
    from mkdcore.models.fewshot import FeatureHeadModel
    from mkdcore.models.folder import load_model, model_dir_of

    path = checkpoint_file(Path(path))
    folder = model_dir_of(path) if path.is_dir() else None
    if folder is not None:
        model, _ = load_model(folder, device)
        head = model.head
    elif path.is_file():
        head = _head_from_original(path, frames)
    else:
        raise ConvertError(f"teacher.checkpoint {path}: neither a model folder (model.json) nor a checkpoint file")
    teacher = FeatureHeadModel(head).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _head_from_original(path: Path, frames: int) -> torch.nn.Module:
    """The few-shot head inside an original teacher checkpoint (MFM: its TRX, the nine
    keys the original ``load_teacher`` meant to copy; Baseline: mean distance)."""
    from mkdcore import api
    from mkdcore.convert.convert import trx_options
    from mkdcore.convert.reader import read_checkpoint
    from mkdcore.convert.rules import infer_kind, map_keys, strip_module

    state = {strip_module(k): v for k, v in read_checkpoint(path).items()}
    kind = infer_kind(list(state))
    if kind == "teacher-baseline":
        return api.create("head", "mean_distance")
    if kind != "teacher-mfm":
        raise ConvertError(f"teacher.checkpoint {path}: holds a {kind or 'foreign'} model, not a teacher (MFM or Baseline)")
    prefix = "bracnch.transformers.0."
    options = trx_options(state, prefix, frames, str(path))
    dim = state[prefix + "k_linear.weight"].shape[1] // 2
    head = api.create("head", "trx", in_dim=dim, **options)
    keys = map_keys([k for k in state if k.startswith(prefix)], kind, [])
    head.load_state_dict({dst.removeprefix("head."): state[src] for src, dst in keys.mapped.items()}, strict=True)
    return head


def check_features(root: Path, keys: Iterable[VideoKey], frames: int, dim: int | None) -> int:
    """Every key has a ``(frames, dim)`` / ``(1, frames, dim)`` float feature under
    ``root`` (read from the ``.npy`` headers only); returns how many were checked."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"teacher.features {root}: no such folder")
    store = FeatureStore(root)
    want = f"({frames}, {dim or 'D'}) or (1, {frames}, {dim or 'D'})"
    missing: list[str] = []
    wrong: list[str] = []
    checked = 0
    for key in keys:
        checked += 1
        path = store.path(key)
        if not path.is_file():
            missing.append(f"{key.class_name}/{key.video}")
            continue
        try:
            shape, dtype = _header(path)
        except (ValueError, OSError, EOFError) as exc:
            wrong.append(f"{key.class_name}/{key.video} unreadable ({exc})")
            continue
        core = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
        if dim is None and len(core) == 2 and core[0] == frames:
            dim = int(core[1])  # no head width to match: every feature has the first one's
            want = f"({frames}, {dim}) or (1, {frames}, {dim})"
        if len(core) != 2 or core[0] != frames or (dim is not None and core[1] != dim):
            wrong.append(f"{key.class_name}/{key.video} {tuple(shape)}")
        elif not np.issubdtype(dtype, np.floating):
            wrong.append(f"{key.class_name}/{key.video} dtype {dtype}")
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {checked} videos have no feature ({_first(missing)})")
    if wrong:
        problems.append(f"{len(wrong)} features are not float {want} ({_first(wrong)})")
    if problems:
        raise DataError(f"teacher.features {root}: " + "; ".join(problems))
    return checked


def _first(items: list[str]) -> str:
    more = f", and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return tuple(shape), dtype


def fingerprint(args: dict[str, Any]) -> str:
    """Names, sizes and modification times of every file under ``args["features"]`` and of
    ``args["checkpoint"]`` (a file, or every file of a model folder): replacing either
    changes it. Stats only (the features of a dataset are tens of thousands of files)."""
    h = hashlib.sha256()
    for name in ("features", "checkpoint"):
        root = Path(args[name])
        h.update(b"\0R" + name.encode())
        if root.is_file():
            st = root.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"\0{os.path.relpath(os.path.join(dirpath, f), root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]
