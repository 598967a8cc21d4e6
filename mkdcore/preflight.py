"""What can be known before a stage trains fails before any stage trains.

``mkd run``, ``mkd submit`` and ``mkd submit --dry-run`` call :func:`check_experiment`
with the stages they are about to run. It collects every problem it can find cheaply
(no decoding, no model building) and raises ONE one-line error listing them, so a user
fixes them all in one go instead of learning of the next one after hours of training:

* the fusion plugin accepts the modalities it will be given (asked through its own
  options model, as the ``fuse`` stage fills them in: ``modalities.names=[rgb]`` with
  MFM is refused by MFM's validator, not by a rule written here);
* pretrained weight files (``teacher.pretrained.<m>``, ``student.pretrained`` and a
  backbone's ``options.pretrained``) exist and are files;
* the dataset (when it already exists: a synthetic one still to be rendered is checked
  by the ``data`` stage after rendering) has every split file, no unsafe or unmatched
  line, and enough classes and videos per class for the configured episodes.

Decoding every frame is the ``data`` stage's job (:mod:`mkdcore.data.verify`): it is the
first stage of every run, so a broken frame still fails before anything trains, and a
submission does not decode a whole dataset in the submitting shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdcore.config import ExperimentConfig
from mkdcore.errors import ConfigError, DataError, MkdError, PluginError
from mkdcore.stages.base import StageNode

#: problems spelled out in the one-line error before "and N more"
MAX_SHOWN = 5
#: stage kinds that read no dataset
DATALESS_KINDS = {"report"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong, and the error class the whole report is raised as."""

    error: type[MkdError]
    message: str


def listing(messages: Sequence[str]) -> str:
    """``a; b; ...; and K more`` on one line (the first :data:`MAX_SHOWN` spelled out)."""
    flat = [" ".join(m.split()) for m in messages]
    more = f"; and {len(flat) - MAX_SHOWN} more" if len(flat) > MAX_SHOWN else ""
    return "; ".join(flat[:MAX_SHOWN]) + more


def summary(messages: Sequence[str]) -> str:
    """One line: the message alone, or ``N problems: a; b; ...; and K more``."""
    return listing(messages) if len(messages) == 1 else f"{len(messages)} problems: {listing(messages)}"


def check_experiment(cfg: ExperimentConfig, stages_to_run: Sequence[StageNode], where: str = "") -> None:
    """Raise one :class:`MkdError` (the class of the first problem: ``ConfigError`` or
    ``DataError``) listing everything wrong for running ``stages_to_run``; return if none.
    ``where`` (e.g. the config file) prefixes the message."""
    problems = experiment_problems(cfg, stages_to_run)
    if problems:
        raise problems[0].error((f"{where}: " if where else "") + summary([p.message for p in problems]))


def experiment_problems(cfg: ExperimentConfig, stages_to_run: Sequence[StageNode]) -> list[Problem]:
    kinds = {n.kind for n in stages_to_run}
    problems: list[Problem] = []
    if "fuse" in kinds:
        problems += fusion_problems(cfg)
    problems += pretrained_problems(cfg, stages_to_run)
    renders_first = cfg.data.synth is not None and "data" in kinds
    if kinds - DATALESS_KINDS and not renders_first:
        problems += [Problem(DataError, m) for m in data_problems(cfg)[1]]
    return problems


# ------------------------------------------------------------------------ config
def fusion_problems(cfg: ExperimentConfig) -> list[Problem]:
    """Validate the fusion options exactly as the ``fuse`` stage will fill them
    (``modalities`` from ``modalities.names``, ``seq_len`` from ``data.frames``)."""
    from mkdcore.plugins import get_manager

    module = cfg.fusion.module
    names = list(cfg.modalities.names)
    registry = get_manager().registry
    try:
        spec = registry.get("fusion", module.name)
    except PluginError as exc:
        return [Problem(ConfigError, f"fusion.module.name: {exc}")]
    fields = spec.options.model_fields if spec.options is not None else {}
    filled = {k: v for k, v in {"modalities": names, "seq_len": cfg.data.frames}.items() if k in fields}
    options = {**filled, **module.options}
    if "modalities" in fields and list(options["modalities"]) != names:
        return [Problem(ConfigError, f"fusion.module.options.modalities {options['modalities']} differs from "
                                     f"modalities.names {names}: the fuse stage feeds it the features of modalities.names")]
    where = f"fusion.module {module.name!r} with modalities.names={names}" if "modalities" in filled else "fusion.module.options"
    try:
        registry.validate_options("fusion", module.name, options, where=where)
    except PluginError as exc:
        return [Problem(ConfigError, str(exc))]
    return []


def _file_problem(field: str, value: Any) -> Problem | None:
    path = Path(value)
    if not path.exists():
        return Problem(ConfigError, f"{field}: {path} does not exist")
    if not path.is_file():
        return Problem(ConfigError, f"{field}: {path} is not a file")
    return None


def pretrained_problems(cfg: ExperimentConfig, stages_to_run: Sequence[StageNode]) -> list[Problem]:
    """Weight files the teacher and student stages about to run will load."""
    t, s = cfg.teacher, cfg.student
    names = list(cfg.modalities.names)
    found: list[Problem | None] = []
    teachers = [n.params["modality"] for n in stages_to_run if n.kind == "teacher"]
    if teachers:
        found += [Problem(ConfigError, f"teacher.pretrained.{m}: {m!r} is not one of modalities.names {names}")
                  for m in t.pretrained if m not in names]
        found += [_file_problem(f"teacher.pretrained.{m}", t.pretrained[m]) for m in teachers if m in t.pretrained]
        if t.backbone.options.get("pretrained"):
            found.append(_file_problem("teacher.backbone.options.pretrained", t.backbone.options["pretrained"]))
    if any(n.kind == "student" for n in stages_to_run):
        if s.pretrained is not None:
            found.append(_file_problem("student.pretrained", s.pretrained))
        if s.backbone.options.get("pretrained"):
            found.append(_file_problem("student.backbone.options.pretrained", s.backbone.options["pretrained"]))
    return [p for p in found if p is not None]


# -------------------------------------------------------------------------- data
def data_problems(cfg: ExperimentConfig) -> tuple[dict[str, Any], list[str]]:
    """Split counts and what is wrong with the dataset's splits for the configured
    episodes (files, lines, missing videos, classes and videos per class)."""
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.splits import load_split

    d, ep = cfg.data, cfg.episodes
    layout = DatasetLayout(d.root)
    try:
        layout.rgb_dir  # noqa: B018  (DataError naming the root)
    except DataError as exc:
        return {}, [str(exc)]
    counts: dict[str, Any] = {}
    problems: list[str] = []
    train_query = max(ep.query_train, cfg.teacher.query_train or 0, cfg.fusion.query_train or 0)
    for which, query in (("train", train_query), ("val", ep.query_test), ("test", ep.query_test)):
        try:
            index = load_split(layout, d.split, which, d.split_id)
        except DataError as exc:
            problems.append(str(exc))
            continue
        counts[which] = {"classes": len(index.classes), "videos": index.num_videos}
        if len(index.classes) < ep.way:
            problems.append(f"{index.path}: the {which} split has {len(index.classes)} classes, "
                            f"{ep.way}-way episodes need {ep.way} (episodes.way)")
        short = [c for c in index.classes if len(index.videos[c]) < ep.shot + query]
        if short:
            problems.append(f"{index.path}: class {short[0]} of the {which} split has {len(index.videos[short[0]])} videos"
                            + (f" (and {len(short) - 1} more classes too few)" if len(short) > 1 else "")
                            + f"; {ep.shot}-shot {query}-query episodes need {ep.shot + query}")
    return counts, problems
