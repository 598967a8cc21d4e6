"""Stage ``evaluate``: every model of the experiment on the SAME test episodes.

Models: each per-modality teacher (its head on its stored features), the MFM teacher
(its TRX head on the fused features), and each student (its backbone on RGB test
frames, cached per video in eval mode, then the shared head per episode, branch logits
summed). Episodes come from ``evaluation.episodes_file`` (frozen) or a seeded sampler.
Accuracy is the mean per-episode accuracy (%), with a 95% interval 1.96 std/sqrt(N).
On N ranks (``runtime.devices``) each rank scores its contiguous share of the episodes
(reading only their videos) and the per-episode results are gathered in episode order,
so the numbers are those of one process; rank 0 alone writes.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from mkdcore import distributed
from mkdcore.config import ExperimentConfig
from mkdcore.data.episodes import EpisodeSampler, load_episodes
from mkdcore.errors import DataError
from mkdcore.fileio import atomic_write_json
from mkdcore.models.folder import load_model, record_evaluation
from mkdcore.stages.base import StageContext
from mkdcore.stages.cost import fewshot_cost, mfm_teacher_cost
from mkdcore.stages.dataset import episode_keys, layout_of, split_of, transform_of
from mkdcore.stages.scoring import (
    EpisodeScores,
    branch_logits,
    feature_caches_for,
    score_episodes,
    score_on_frames,
)
from mkdcore.tracking import stage_loggers
from mkdcore.tracking.base import safe_metric_name


def test_episodes(ctx: StageContext) -> tuple[list, dict[str, Any]]:
    cfg = ctx.cfg
    e, ep = cfg.evaluation, cfg.episodes
    if e.episodes_file is not None:
        episodes, meta = load_episodes(e.episodes_file)
        if len(episodes) < e.episodes:
            raise DataError(f"{e.episodes_file}: holds {len(episodes)} episodes, evaluation.episodes asks for {e.episodes}")
        return episodes[: e.episodes], {"source": str(e.episodes_file), **meta}
    sampler = EpisodeSampler(split_of(cfg, e.split), ep.way, ep.shot, ep.query_test, seed=e.seed)
    return sampler.take(e.episodes), {"source": "sampler", "split": e.split, "seed": e.seed}


def log_test_results(ctx: StageContext, results: dict[str, Any]) -> None:
    """Every model's test accuracy and 95% interval to the configured loggers (as
    ``test_acc_<model>`` / ``test_ci95_<model>``, one validation record at step 0), and
    ``results.json`` as an artefact: the numbers a tracker's run page should show."""
    values = {}
    for name, r in results.items():
        safe = safe_metric_name(name).replace(":", "_")
        values[f"test_acc_{safe}"] = float(r["accuracy"])
        values[f"test_ci95_{safe}"] = float(r["ci95"])
    with stage_loggers(ctx) as loggers:
        loggers.validation(0, values)
        loggers.artifact(ctx.files.results)


#: (architecture, episode shape) -> cost, for this process: see :func:`cost_of`
_COSTS: dict[str, dict[str, Any]] = {}


def cost_of(model: torch.nn.Module, spec: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any]:
    """:func:`fewshot_cost`, counted once per architecture and episode shape: a spec's
    ``type``, ``backbone``, ``head`` and ``frames`` are all that ``build`` reads (the
    module's repr guards against a plugin swapped under the same name), so the
    per-modality teachers, and every later evaluation in the process (sweep members),
    share one count instead of a meta-device forward (~0.3 s of CPU) each."""
    ep = cfg.episodes
    key = json.dumps([{k: spec[k] for k in ("type", "backbone", "head", "frames")}, repr(model),
                      [ep.way, ep.shot, ep.query_test, cfg.data.frames, cfg.data.crop]], sort_keys=True)
    if key not in _COSTS:
        _COSTS[key] = fewshot_cost(model, cfg)
    return dict(_COSTS[key])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    all_episodes, source = test_episodes(ctx)
    episodes = distributed.shard(all_episodes)  # this rank's share (all of them on one rank)
    keys = episode_keys(episodes)
    results: dict[str, Any] = {}
    device = ctx.device
    main = distributed.is_main()
    progress = ctx.progress(len(ctx.node.deps), unit="models")
    if main:
        progress.start()

    def record(name: str, role: str, scores: EpisodeScores, cost: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        scores = EpisodeScores(*(distributed.gather_lists(x) for x in (scores.accuracies, scores.true, scores.pred)))
        if not main:
            return
        results[name] = {"role": role, **scores.summary(), **cost, **(extra or {})}
        progress.update(len(results), **{name: results[name]["accuracy"]})
        ctx.log(f"{name}: {results[name]['accuracy']:.2f} +- {results[name]['ci95']:.2f}")

    teacher_costs = {}
    evaluated = {}  # student model folder -> result name: their cards get the evaluation
    for dep in ctx.node.deps:
        node = ctx.nodes[dep]
        if node.kind == "features":
            m = node.params["modality"]
            teacher, teacher_spec = load_model(ctx.nodes[f"teacher:{m}"].files.model, device)
            caches = feature_caches_for({"features": node.files.features}, keys, cfg.data.frames)
            scores = score_episodes(episodes, lambda ep, t=teacher, c=caches: branch_logits(t.head, ep, c, device))
            teacher_costs[m] = cost_of(teacher, teacher_spec, cfg)
            record(f"teacher:{m}", "teacher", scores, teacher_costs[m], {"modality": m})
        elif node.kind == "mm_features":
            fusion_teacher, spec = load_model(ctx.nodes["fuse"].files.model, device)
            caches = feature_caches_for({"features": node.files.features}, keys, cfg.data.frames)
            scores = score_episodes(episodes, lambda ep: branch_logits(fusion_teacher.head, ep, caches, device))
            record("teacher:mfm", "teacher", scores, mfm_teacher_cost(fusion_teacher, teacher_costs, cfg), {"modalities": spec["modalities"]})
        elif node.kind == "student":
            model, spec = load_model(node.files.model, device)
            scores = score_on_frames(model, episodes, layout_of(cfg), "rgb", transform_of(cfg, train=False),
                                     cfg.data.frames, device, cfg.evaluation.batch_frames,
                                     amp=cfg.training.amp, decode=cfg.runtime.decode)
            manifest = node.manifest()["outputs"]
            record(node.name, "student", scores, cost_of(model, spec, cfg),
                   {"variant": node.params["variant"], "distiller": manifest["distiller"], "backbone": spec["backbone"]})
            evaluated[node.files.model] = node.name
    if not main:
        return {}
    progress.finish(len(results))
    ep = cfg.episodes
    out = {"setting": {"way": ep.way, "shot": ep.shot, "query": ep.query_test, "frames": cfg.data.frames, "size": cfg.data.crop,
                       "episodes": len(all_episodes), **source}, "models": results}
    atomic_write_json(ctx.files.results, out, "evaluation results")
    log_test_results(ctx, results)
    for folder, name in evaluated.items():  # after the results: a failed evaluation changes no card
        r = results[name]
        record_evaluation(folder, {k: r[k] for k in ("accuracy", "ci95", "episodes", "params", "gmacs")}
                          | {"way": ep.way, "shot": ep.shot, "query": ep.query_test, "source": source["source"],
                              "amp": cfg.training.amp, "decode": cfg.runtime.decode})
    return {"results": str(ctx.files.results), "models": {k: round(v["accuracy"], 2) for k, v in results.items()}}
