"""The experiment DAG: which stages an experiment needs and their content keys.

::

    data ─▶ derive:<m> ─▶ teacher:<m> ─▶ features:<m> ─┬─▶ fuse ─▶ mm_features ─┬─▶ student:lite-mkd ─┐
      │                                                 │                       │                     │
      │                                                 └───────────────────────┴─────────────────────┼─▶ evaluate ─▶ report
      └──────────────────────────────────────────────────────────────────────▶ student:baseline ──────┘

(``rgb`` has no derive stage; ``evaluate`` reads every teacher's features, the fused
features and every student. Teacher stages exist only when a student's distiller
declares ``needs_teacher``, and not at all when ``teacher.features`` names released
teacher features: then ``data ─▶ student:<variant> ─▶ evaluate ─▶ report``, the student's
key holds the features' and checkpoint's paths and its probe their files
(:mod:`mkdcore.convert.released`), so replacing them makes it stale.)

A key hashes exactly what the stage reads (its config sections and its inputs' keys).
"""

from __future__ import annotations

from typing import Any

from mkdcore.config import Component, ExperimentConfig, stable_hash, student_variants
from mkdcore.names import stage_name
from mkdcore.stages.base import StageNode


def _dump(obj: Any) -> Any:
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


def needs_teacher(distiller: Component) -> bool:
    """Whether the distiller declared that it reads a teacher (``needs_teacher``, the
    default): only then does its student depend on the teacher stages."""
    from mkdcore import api

    return bool(api.get("distiller", distiller.name).capability("needs_teacher"))


def plan(cfg: ExperimentConfig) -> list[StageNode]:
    """All stages of ``cfg`` in a topological order."""
    runs = cfg.runtime.runs_dir
    nodes: list[StageNode] = []

    def add(name: str, kind: str, payload: dict[str, Any], deps: list[str], components: list[tuple[str, str]] = (),
            probe: dict[str, Any] | None = None, **params: Any) -> StageNode:
        dep_keys = {d: next(n.key for n in nodes if n.name == d) for d in deps}
        key = stable_hash({"kind": kind, "params": params, "payload": payload, "deps": dep_keys})
        node = StageNode(name=name, kind=kind, key=key, deps=deps, params=params, runs_dir=runs,
                         components=list(components), probe=probe)
        nodes.append(node)
        return node

    d = cfg.data
    data_payload = {"root": str(d.root.resolve()), "split": d.split, "split_id": d.split_id, "frames": d.frames,
                    "synth": _dump(d.synth) if d.synth else None}
    root = str(d.root.resolve())
    add("data", "data", data_payload, [],
        probe={"kind": "dataset", "args": {"root": root, "split": d.split, "split_id": d.split_id},
               "changed": f"the dataset under {d.root} changed (videos or split files)"})
    pixels = {"resize": d.resize, "crop": d.crop, "normalize": d.normalize, "frames": d.frames}
    ep = cfg.episodes

    variants = student_variants(cfg)
    # teacher stages exist only for a student whose distiller declared it reads a teacher
    # ... and not when the teacher's features come from files (the released ones)
    released = cfg.teacher.features is not None
    teachers_needed = not released and any(needs_teacher(spec["distiller"]) for spec in variants.values())
    feature_nodes = []
    for m in cfg.modalities.names if teachers_needed else []:
        deps = ["data"]
        if m != "rgb":
            derive = cfg.modalities.derive.get(m, Component(name=m))
            add(f"derive:{m}", "derive", {"derive": _dump(derive)}, ["data"], components=[("modality", derive.name)],
                probe={"kind": "derived", "args": {"root": root, "modality": m},
                       "changed": f"the {m} frames under {d.root} were derived again (other options or --force)"},
                modality=m)
            deps = [f"derive:{m}"]
        t = cfg.teacher
        add(
            f"teacher:{m}",
            "teacher",
            {"pixels": pixels, "way": ep.way, "shot": ep.shot, "query": t.query_train or ep.query_train,
             "backbone": _dump(t.backbone), "head": _dump(t.head), "training": _dump(t.training),
             "pretrained": str(t.pretrained.get(m)) if t.pretrained.get(m) else None,
             "val": {"query": ep.query_test}},
            deps,
            components=[("backbone", t.backbone.name), ("head", t.head.name)],
            modality=m,
        )
        feature_nodes.append(add(f"features:{m}", "features", {"pixels": pixels}, [f"teacher:{m}"], modality=m).name)

    f = cfg.fusion
    if teachers_needed:
        add("fuse", "fuse", {"module": _dump(f.module), "head": _dump(f.head), "training": _dump(f.training),
                             "way": ep.way, "shot": ep.shot, "query": f.query_train or ep.query_train,
                             "val": {"query": ep.query_test}}, feature_nodes,
            components=[("fusion", f.module.name), ("head", f.head.name)])
        add("mm_features", "mm_features", {}, ["fuse"])
    teacher_outputs = feature_nodes + ["mm_features"] if teachers_needed else []

    student_nodes = []
    for variant, spec in variants.items():
        reads_teacher = needs_teacher(spec["distiller"])
        deps = ["data"] + (["mm_features"] if reads_teacher and not released else [])
        payload = {"pixels": pixels, "way": ep.way, "shot": ep.shot, "query": ep.query_train,
                   "backbone": _dump(spec["backbone"]), "head": _dump(cfg.student.head),
                   "pretrained": str(cfg.student.pretrained) if cfg.student.pretrained else None,
                   "distiller": _dump(spec["distiller"]), "training": _dump(cfg.training),
                   "val": {"query": ep.query_test}}
        components = [("backbone", spec["backbone"].name), ("head", cfg.student.head.name),
                      ("distiller", spec["distiller"].name)]
        probe = None
        if reads_teacher and released:
            from mkdcore.convert.released import teacher_files

            features, checkpoint = teacher_files(cfg)
            files = {"features": str(features), "checkpoint": str(checkpoint)}
            payload["teacher_files"] = files
            probe = {"kind": "teacher_files", "args": files,
                     "changed": f"the teacher files changed ({features} or {checkpoint})"}
        student_nodes.append(add(f"student:{variant}", "student", payload, deps, components=components, probe=probe,
                                 variant=variant).name)

    e = cfg.evaluation
    eval_payload = {"evaluation": _dump(e), "way": ep.way, "shot": ep.shot, "query": ep.query_test, "pixels": pixels}
    add("evaluate", "evaluate", eval_payload, teacher_outputs + student_nodes)
    add("report", "report", {"name": cfg.name, "group": cfg.group}, ["evaluate"])
    return nodes


def select(nodes: list[StageNode], names: list[str] | None) -> list[StageNode]:
    """The requested stages plus everything they depend on, in DAG order.

    ``names`` may name stages (``teacher:rgb``) or kinds (``teacher``); each is validated
    (``--stages`` and queue messages are user text that ends up in log file names).
    """
    if not names:
        return nodes
    by_name = {n.name: n for n in nodes}
    wanted: set[str] = set()
    for name in map(stage_name, names):
        matched = [n.name for n in nodes if n.name == name or n.kind == name]
        if not matched:
            from mkdcore.errors import ConfigError

            raise ConfigError(f"--stages: unknown stage {name!r}; stages: {', '.join(n.name for n in nodes)}")
        wanted.update(matched)
    stack = list(wanted)
    while stack:
        for dep in by_name[stack.pop()].deps:
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [n for n in nodes if n.name in wanted]
