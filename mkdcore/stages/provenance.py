"""Provenance: when a finished stage may be reused, and why not.

A stage directory is keyed by its config sections and its inputs' keys, so a config
change lands in a new directory. That is not enough: the *outputs* a stage read can be
redone under the same key (``--force``, a rerun after an upstream changed), the data on
disk can change under the same config, and new code can make different results. So a
finished stage's manifest records, beside its key:

* ``id``: a fresh identifier of this particular result (a new one each time it is made);
* ``inputs``: for every stage it read, that stage's ``<kind>/<key>`` and manifest ``id``;
* ``code``: the mkd version and the version of every plugin distribution whose
  components it used;
* ``probe``: for stages whose output lives outside their directory (``data``: the
  dataset; ``derive``: the derived frames in the dataset root), a cheap fingerprint of
  that output, recomputed at reuse time.

:func:`check` decides from manifests alone (no experiment config, no torch), so the
in-process runner, ``mkd run --list`` and the queue's dispatcher share one rule: a stage
is reused only when its manifest is readable, its inputs are the exact results that
exist now and are themselves reusable, its code versions match, and its probe matches.
Otherwise :attr:`Freshness.reason` says why, e.g. ``upstream teacher:rgb changed``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Callable

from mkdcore.errors import MkdError
from mkdcore.fileio import read_json_if_valid
from mkdcore.stages.stage_dir import StageDir

#: manifests before this format carry no provenance and are never reused
FORMAT = 2


@dataclass(frozen=True)
class Freshness:
    """Whether a stage's finished output may be reused; ``reason`` says why not."""

    fresh: bool
    reason: str = ""
    id: str | None = None  # the manifest id when fresh

    def __bool__(self) -> bool:
        return self.fresh


def new_id() -> str:
    return uuid.uuid4().hex


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``stage_dir``, or None when absent or unreadable (not reusable)."""
    return read_json_if_valid(StageDir(Path(stage_dir)).manifest)


def manifest_id(stage_dir: Path) -> str | None:
    m = read_manifest(stage_dir)
    return m.get("id") if m is not None and m.get("format") == FORMAT else None


# ------------------------------------------------------------------ code versions
def installed_version(package: str) -> str | None:
    try:
        return dist_version(package)
    except PackageNotFoundError:
        return None


def code_versions(packages: dict[str, str]) -> dict[str, Any]:
    """``{"mkd": version, "plugins": {package: version}}`` for the given plugin packages
    (packages without a version, e.g. plugins registered in-process by tests, are not
    distributions and are left out)."""
    from mkdcore import __version__

    return {"mkd": __version__, "plugins": {p: v for p, v in sorted(packages.items()) if v}}


def code_change(recorded: dict[str, Any]) -> str | None:
    """Why the code that made a result differs from the code installed now, or None."""
    from mkdcore import __version__

    if recorded.get("mkd") != __version__:
        return f"mkd version changed ({recorded.get('mkd')} -> {__version__})"
    for package, made_with in recorded.get("plugins", {}).items():
        now = installed_version(package)
        if now != made_with:
            return f"plugin package {package} changed ({made_with} -> {now or 'not installed'})"
    return None


# ------------------------------------------------------------------ probes
#: probe kind -> function(args) -> fingerprint string; args are stored in the manifest so
#: the probe can be recomputed without the experiment config
PROBES: dict[str, Callable[[dict[str, Any]], str]] = {}


def probe(name: str) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    def deco(fn: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        PROBES[name] = fn
        return fn

    return deco


@probe("dataset")
def dataset_fingerprint(args: dict[str, Any]) -> str:
    """The split files' bytes and, for every class folder of the RGB frames (and of the
    next original frames, ``rgb_next_l8``), its video folders with their modification
    times: adding, removing or re-extracting a video changes it. (Rewriting a frame file in place keeps the folder's mtime; the data stage
    decodes every frame the run reads, so a broken one still fails loudly.)"""
    from mkdcore.data.layout import WHICH, DatasetLayout

    layout = DatasetLayout(args["root"])
    h = hashlib.sha256()
    for which in WHICH:
        p = layout.split_file(args["split"], which, args["split_id"])
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    from mkdcore.data.derive import NEXT_FRAMES_MODALITY

    # the RGB frames, and the next original frames flow-like modalities pair them with
    folders = [layout.rgb_dir, layout.modality_dir(NEXT_FRAMES_MODALITY)]
    for folder in folders:
        h.update(b"\0F" + folder.name.encode())
        if not folder.is_dir():
            continue
        for cls in sorted(os.scandir(folder), key=lambda e: e.name):
            if cls.name.startswith(".") or not cls.is_dir() or cls.name.endswith("_l8"):
                continue
            h.update(b"\0C" + cls.name.encode())
            for vid in sorted(os.scandir(cls.path), key=lambda e: e.name):
                if vid.name.startswith(".") or not vid.is_dir():
                    continue
                h.update(b"\0V" + vid.name.encode() + str(vid.stat().st_mtime_ns).encode())
    return h.hexdigest()[:32]


@probe("derived")
def derived_fingerprint(args: dict[str, Any]) -> str:
    """The derived folder's stamp (options digest, run id, completeness): any
    re-derivation (other options, or ``--force``) writes a new run id."""
    from mkdcore.data.derive import read_stamp
    from mkdcore.data.layout import DatasetLayout

    stamp = read_stamp(DatasetLayout(args["root"]).modality_dir(args["modality"]))
    return "<no stamp>" if stamp is None else f"{stamp.get('digest')}:{stamp.get('run')}:{stamp.get('complete')}"


@probe("teacher_files")
def teacher_files_fingerprint(args: dict[str, Any]) -> str:
    """Released teacher features and checkpoint a student distils from
    (:func:`mkdcore.convert.released.fingerprint`)."""
    from mkdcore.convert.released import fingerprint

    return fingerprint(args)


def run_probe(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    return PROBES[spec["kind"]](spec["args"])


# ------------------------------------------------------------------ the rule
def check(stage_dir: Path, expected_inputs: dict[str, Path] | None = None,
          _memo: dict[Path, Freshness] | None = None) -> Freshness:
    """May the finished output in ``stage_dir`` be reused? (See the module docstring.)

    ``expected_inputs`` (stage name -> directory) are the inputs the caller's plan says
    this stage reads; a manifest recording other inputs is not reusable."""
    memo = {} if _memo is None else _memo
    stage_dir = Path(stage_dir)
    if stage_dir in memo:
        return memo[stage_dir]
    result = _check(stage_dir, expected_inputs, memo)
    memo[stage_dir] = result
    return result


def _check(stage_dir: Path, expected: dict[str, Path] | None, memo: dict[Path, Freshness]) -> Freshness:
    files = StageDir(stage_dir)
    if not files.manifest.exists():
        if files.checkpoints.is_dir() or files.started.exists():
            return Freshness(False, "interrupted (resumes where it stopped)")
        return Freshness(False, "not run yet")
    m = read_manifest(stage_dir)
    if m is None:
        return Freshness(False, f"its manifest {files.manifest} is unreadable (redone)")
    if m.get("format") != FORMAT:
        return Freshness(False, "made by an older mkd without provenance (redone)")
    inputs: dict[str, dict[str, Any]] = m["inputs"]
    if expected is not None:
        if set(expected) != set(inputs):
            return Freshness(False, f"inputs differ ({', '.join(sorted(inputs))} recorded)")
        for name, path in expected.items():
            if inputs[name]["stage"] != rel(path):
                return Freshness(False, f"upstream {name} is another stage ({inputs[name]['stage']})")
    for name, rec in inputs.items():
        up = check(sibling(stage_dir, rec["stage"]), None, memo)
        if not up.fresh:
            return Freshness(False, f"upstream {name} is stale: {up.reason}")
        if up.id != rec["id"]:
            return Freshness(False, f"upstream {name} changed")
    why = code_change(m["code"])
    if why:
        return Freshness(False, why)
    if m.get("probe"):
        try:
            now = run_probe(m["probe"])
        except OSError as exc:
            return Freshness(False, f"cannot check its output ({exc.strerror})")
        except MkdError as exc:
            return Freshness(False, f"cannot check its output ({exc})")
        if now != m["probe"]["value"]:
            return Freshness(False, m["probe"]["changed"])
    return Freshness(True, "", m["id"])


def rel(stage_dir: Path) -> str:
    """``<kind>/<key>``: a stage directory named relative to its runs directory, so a
    runs directory that is moved or copied keeps its provenance."""
    stage_dir = Path(stage_dir)
    return f"{stage_dir.parent.name}/{stage_dir.name}"


def sibling(stage_dir: Path, name: str) -> Path:
    """The stage directory ``<kind>/<key>`` in the same runs directory as ``stage_dir``."""
    return Path(stage_dir).parent.parent / name


def inputs_record(deps: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``{name: {"stage": "<kind>/<key>", "id"}}`` for the inputs a stage is about to read."""
    return {name: {"stage": rel(path), "id": manifest_id(path)} for name, path in deps.items()}


def started_inputs(stage_dir: Path) -> dict[str, Any] | None:
    """What an interrupted run of this stage was made from (None when unknown)."""
    return read_json_if_valid(StageDir(Path(stage_dir)).started)
