"""Names users type are never paths until validated.

Experiment names, sweep labels, job ids, stage names, class and video names all end up
in file paths (``runs/<name>/``, ``runs/jobs/<id>/``, ``<root>/rgb_l8/<class>/<video>``).
Each kind of name has one validator here, applied where the name enters mkd (config,
CLI argument, split file line, queue message), and :func:`inside` checks that every
path built from them stays under its root, so ``../../x`` or ``/etc`` can never make mkd
read or write outside the folders it owns.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdcore.errors import MkdError


class UnsafeNameError(MkdError):
    """A user-typed name is not safe to use in a path."""


#: experiment names, sweep labels: letters, digits, ``. _ - +``, not starting with a dot
_SIMPLE = re.compile(r"^[A-Za-z0-9_+\-][A-Za-z0-9._+\-]{0,127}$")
#: job ids as mkd makes them (``j`` + date + random hex) or as a user types a prefix
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
#: stage names: ``kind`` or ``kind:param`` (``teacher:rgb``, ``student:lite-mkd``)
_STAGE = re.compile(r"^[a-z_]+(:[A-Za-z0-9_+\-.]{1,64})?$")
#: class and video folder names may hold spaces and most punctuation (UCF101 has none,
#: user data often has), but never a separator, a NUL, or a leading dot
_FOLDER_BAD = re.compile(r"[/\\\x00-\x1f]")


def experiment_name(value: object, kind: str = "experiment name") -> str:
    """``name:`` of a config, ``--name``; also used for sweep labels and groups."""
    if not isinstance(value, str) or not _SIMPLE.match(value) or ".." in value:
        raise UnsafeNameError(f"{kind} {value!r} is not allowed: use 1-128 letters, digits and . _ - + "
                         "(no '/', no '..', not starting with '.')")
    return value


def sweep_label(value: object) -> str:
    """A sweep label once it becomes part of a folder name (see :func:`sweep_member_name`)."""
    return experiment_name(value, "sweep label")


#: what a sweep value may keep when it becomes part of a folder name
_LABEL_BAD = re.compile(r"(?:[^A-Za-z0-9._+\-]|\.{2,})+")


def sweep_member_name(name: str, label: str) -> str:
    """``runs/<name>-<label>/`` of one sweep member: ``--sweep`` values are free text
    (``a/b``, ``..``), so every run of other characters becomes ``_`` and the result is
    validated as an experiment name (an empty or over-long one is refused)."""
    cleaned = _LABEL_BAD.sub("_", f"{name}-{label}").strip("_.")
    return sweep_label(cleaned)


def job_id(value: object) -> str:
    """A job id or a prefix of one as typed to ``mkd status|logs|cancel|retry``, or read
    from a queue message; it becomes ``runs/jobs/<id>/``."""
    if not isinstance(value, str) or not _JOB_ID.match(value):
        raise UnsafeNameError(f"job id {value!r} is not allowed: job ids are letters, digits, '_' and '-' "
                         "(see `mkd status` for the ids)")
    return value


def stage_name(value: object) -> str:
    """A stage or stage kind from ``--stages``/``--force`` or a queue message; it becomes
    part of log file names (``logs/teacher-rgb.log``)."""
    if not isinstance(value, str) or not _STAGE.match(value) or ".." in value:
        raise UnsafeNameError(f"stage name {value!r} is not allowed: stages are 'kind' or 'kind:name' "
                         "(see `mkd run CONFIG --list`)")
    return value


def split_stage_name(value: str) -> tuple[str, str | None]:
    """``"teacher:rgb"`` -> ``("teacher", "rgb")``, ``"report"`` -> ``("report", None)``."""
    stage_name(value)
    kind, _, param = value.partition(":")
    return kind, (param or None)


def folder_name(value: object, kind: str = "name") -> str:
    """A class or video folder name: anything but separators, control characters,
    ``.``/``..`` and a leading dot (hidden folders are mkd's temporary files)."""
    if (not isinstance(value, str) or not value or value in (".", "..") or value.startswith(".")
            or _FOLDER_BAD.search(value) or len(value) > 255):
        raise UnsafeNameError(f"{kind} {value!r} is not allowed: no '/', '\\', control characters, "
                         "leading '.', or '..'")
    return value


def class_name(value: object) -> str:
    return folder_name(value, "class name")


def video_name(value: object) -> str:
    return folder_name(value, "video name")


def inside(root: Path, path: Path, what: str = "path") -> Path:
    """``path`` resolved, checked to lie under ``root`` (symlinks followed)."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise UnsafeNameError(f"{what} {path} leaves {root_r}")
    return path_r


def safe_join(root: Path, *parts: str, what: str = "path") -> Path:
    """``root / parts...`` after checking each part is one plain path component and the
    result stays under ``root``."""
    for part in parts:
        folder_name(part, what)
    joined = Path(root).joinpath(*parts)
    inside(root, joined, what)
    return joined
