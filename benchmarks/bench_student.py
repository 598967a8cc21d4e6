"""Throughput of the student stage: training episodes/s, data-loading frames/s, and
evaluation episodes/s, for one experiment config. Run on demand from the repo root:

    .venv/bin/python benchmarks/bench_student.py [--config configs/quickstart.yaml] [--set KEY=VALUE ...]
        [--tasks 16] [--workers 0,1,2] [--eval-episodes 300] [--with-teacher] [--out bench.json]
    .venv/bin/python benchmarks/bench_student.py --compare plain [--models student,teacher,mfm]
        [--backbones resnet18,...] [--sizes 112,224] [--tasks 6] [--threads 2]   (see compare_plain.py)

(a) Training: the real student stage (``mkdcore.stages.student.run`` -> ``train_on_frames``
    -> ``EpisodicTrainer``: FewShotModel forward, distiller loss, backward, optimiser step)
    for ``warm-up + tasks`` episodes in a scratch stage directory. The engine and the
    episode reader are wrapped with timers only (nothing re-implemented), which splits
    each task into *data* time (waiting for ``OrderedEpisodes.get``: with
    ``data.num_workers=0`` that is all decoding + augmentation) and *compute* time
    (host-to-device copy, forward, loss, backward, optimiser step, logging).
(b) Loading: ``EpisodeDataset`` + ``episode_loader`` exactly as training builds them,
    for each worker count; frames/s counts decoded, augmented RGB frames
    ((support + query clips) x T).
(c) Evaluation: the evaluate stage's code (``test_episodes``, feature caches,
    ``score_episodes`` + ``branch_logits``) on the model trained in (a): backbone
    feature extraction (videos/s) then per-episode scoring on cached features (episodes/s).

The Lite-MKD student needs the MFM teacher's fused features (stage ``mm_features``).
When they are not there the benchmark trains with distiller ``ce`` instead (same
student network, no teacher head forward, no stored-feature reads) and says so;
``--with-teacher`` first runs the missing teacher stages of the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from mkdcore.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    read_yaml,
)
from mkdcore.stages.base import StageContext, StageNode

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    """The checkout's commit, so a number can be tied to the code that produced it."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "load_average_start": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    """Timings on CUDA must wait for queued kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------- config
def bench_config(args: argparse.Namespace, measured: int | None = None, distiller_ce: bool = False) -> ExperimentConfig:
    """The user's config and --set overrides, plus the benchmark's short training run.

    The YAML is read once (``args.config_data``) so every stage of the benchmark sees the
    same config even if the file changes meanwhile."""
    overrides = list(args.set)
    if measured is not None:
        overrides += [f"training.tasks={measured}", f"training.checkpoint_every={measured}", f"training.val_every={measured}",
                      f"training.val_episodes={args.val_episodes}", f"evaluation.episodes={args.eval_episodes}"]
    if distiller_ce:
        overrides.append("distillation.distiller={name: ce}")
    return config_from_dict(apply_overrides(args.config_data, overrides), str(args.config))


def prepare(args: argparse.Namespace, echo) -> tuple[bool, str]:
    """Render/check the dataset; run the teacher stages when asked. Returns
    (teacher available, a note saying which distiller the benchmark trains with)."""
    from mkdcore.config import student_variants
    from mkdcore.stages.dag import needs_teacher, plan
    from mkdcore.stages.runner import run_experiment

    cfg = bench_config(args)
    run_experiment(cfg, stages=["data"], echo=echo)
    distiller = student_variants(cfg)[args.variant]["distiller"]
    if not needs_teacher(distiller):
        return False, f"distiller {distiller.name} (needs no teacher)"
    nodes = {n.name: n for n in plan(cfg)}
    mm = nodes["mm_features"]
    if not mm.freshness(nodes) and args.with_teacher:
        run_experiment(cfg, stages=["mm_features"], echo=echo)
    if mm.freshness(nodes):
        return True, f"distiller {distiller.name} with the MFM teacher ({mm.stage_dir})"
    return False, (f"distiller ce instead of {distiller.name}: the teacher stage mm_features is not done "
                   f"({mm.stage_dir}); pass --with-teacher to train it first")


# ------------------------------------------------------------------- (a) training
@dataclasses.dataclass
class TrainTimes:
    task_starts: list[float] = dataclasses.field(default_factory=list)
    data: list[float] = dataclasses.field(default_factory=list)
    end: float | None = None
    validation_s: float = 0.0


def bench_training(cfg: ExperimentConfig, variant: str, warmup: int, scratch: Path, device: torch.device) -> tuple[dict[str, Any], StageContext]:
    """Run the student stage in ``scratch`` with timers around the episode reader and
    the engine's step / validation callbacks."""
    import mkdcore.stages.fewshot_training as ft
    from mkdcore.stages import student
    from mkdcore.stages.dag import plan

    times = TrainTimes()

    class TimedEpisodes(ft.OrderedEpisodes):
        def get(self, index: int) -> dict[str, Any]:
            t = time.perf_counter()
            item = super().get(index)
            times.data.append(time.perf_counter() - t)
            return item

    class TimedTrainer(ft.EpisodicTrainer):
        def __init__(self, model, tcfg, stage_dir, dev, step_fn, validate_fn=None, **kw):
            def step(task: int, m: torch.nn.Module):
                sync(dev)
                times.task_starts.append(time.perf_counter())
                return step_fn(task, m)

            def validate(m: torch.nn.Module) -> float:
                # the engine validates after the last task's optimiser step: the timed window ends here
                sync(dev)
                t = time.perf_counter()
                if times.end is None:
                    times.end = t
                acc = validate_fn(m)
                times.validation_s += time.perf_counter() - t
                return acc

            super().__init__(model, tcfg, stage_dir, dev, step, validate if validate_fn else None, **kw)

    nodes = {n.name: n for n in plan(cfg)}
    name = f"student:{variant}"
    node: StageNode = dataclasses.replace(nodes[name], runs_dir=scratch)  # never touch the real stage's checkpoints
    ctx = StageContext(cfg=cfg, node=node, nodes={**nodes, name: node}, device=device)
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(ft, "OrderedEpisodes", TimedEpisodes))
        stack.enter_context(mock.patch.object(ft, "EpisodicTrainer", TimedTrainer))
        t0 = time.perf_counter()
        outputs = student.run(ctx)
        stage_s = time.perf_counter() - t0
    n_tasks = cfg.training.tasks
    assert times.end is not None and len(times.task_starts) == n_tasks == len(times.data)
    bounds = times.task_starts + [times.end]
    per_task = [b - a for a, b in itertools.pairwise(bounds)][warmup:]
    data = times.data[warmup:]
    total = sum(per_task)
    ep = cfg.episodes
    clips = ep.way * (ep.shot + ep.query_train)
    result = {
        "variant": variant, "distiller": outputs["distiller"], "warmup_tasks": warmup, "tasks": len(per_task),
        "tasks_per_batch": cfg.training.tasks_per_batch, "optimizer_steps": len(per_task) // cfg.training.tasks_per_batch,
        "num_workers": cfg.data.num_workers, "episode": f"{ep.way}-way {ep.shot}-shot {ep.query_train}-query",
        "frames_per_episode": clips * cfg.data.frames, "crop_px": cfg.data.crop,
        "episodes_per_s": len(per_task) / total,
        "frames_per_s": len(per_task) * clips * cfg.data.frames / total,
        "s_per_episode_median": statistics.median(per_task),
        "data_s_per_episode": sum(data) / len(data), "compute_s_per_episode": (total - sum(data)) / len(data),
        "data_fraction": sum(data) / total,
        "params": outputs["params"], "validation_s": times.validation_s, "val_episodes": cfg.training.val_episodes,
        "stage_s": stage_s,
    }
    return result, ctx


# ------------------------------------------------------------------- (b) loading
def bench_loading(cfg: ExperimentConfig, teacher_store: Path | None, workers: list[int], warmup: int, n: int,
                  device: torch.device) -> list[dict[str, Any]]:
    """The training episode reader alone (as train_on_frames builds it), per worker count."""
    from mkdcore.data.episodes import EpisodeSampler
    from mkdcore.data.features import FeatureStore
    from mkdcore.data.loader import EpisodeDataset, episode_loader
    from mkdcore.stages.dataset import layout_of, split_of, transform_of

    ep, tr = cfg.episodes, cfg.training
    frames = ep.way * (ep.shot + ep.query_train) * cfg.data.frames
    out = []
    for w in workers:
        sampler = EpisodeSampler(split_of(cfg, "train"), ep.way, ep.shot, ep.query_train, seed=tr.seed)
        stores = {"teacher": FeatureStore(teacher_store)} if teacher_store is not None else None
        dataset = EpisodeDataset(layout_of(cfg), None, sampler, modalities=["rgb"], transform=transform_of(cfg, train=True),
                                 feature_stores=stores, frames=cfg.data.frames, num_episodes=warmup + n, seed=tr.seed)
        t_start = time.perf_counter()
        it = iter(episode_loader(dataset, w, device))
        for _ in range(warmup):  # worker start-up and first batches are not throughput
            next(it)
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
        dt = time.perf_counter() - t0
        out.append({"num_workers": w, "episodes": n, "episodes_per_s": n / dt, "frames_per_s": n * frames / dt,
                    "startup_s": t0 - t_start, "teacher_features": teacher_store is not None})
        del it
    return out


# ------------------------------------------------------------------- (c) evaluation
def bench_evaluation(cfg: ExperimentConfig, train_ctx: StageContext, device: torch.device) -> dict[str, Any]:
    """The evaluate stage's student path: cache test-video features once, score episodes."""
    from mkdcore.models.folder import load_model
    from mkdcore.stages.dataset import episode_keys, layout_of, transform_of
    from mkdcore.stages.evaluate import test_episodes
    from mkdcore.stages.scoring import branch_caches, branch_logits, extract_backbone_features, score_episodes

    model, _ = load_model(train_ctx.files.model, device)
    episodes, source = test_episodes(train_ctx)
    keys = episode_keys(episodes)
    sync(device)
    t0 = time.perf_counter()
    caches = branch_caches(extract_backbone_features(model.backbone, layout_of(cfg), keys, "rgb", transform_of(cfg, train=False),
                                                     cfg.data.frames, device, cfg.evaluation.batch_frames))
    sync(device)
    extract_s = time.perf_counter() - t0

    def score(eps):
        return score_episodes(eps, lambda e: branch_logits(model.head, e, caches, device))

    score(episodes[: min(5, len(episodes))])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    scores = score(episodes)
    sync(device)
    score_s = time.perf_counter() - t0
    return {
        "episodes": len(episodes), "source": source.get("source"), "videos": len(keys), "branches": len(caches),
        "extract_videos_per_s": len(keys) / extract_s, "extract_frames_per_s": len(keys) * cfg.data.frames / extract_s,
        "extract_s": extract_s, "score_episodes_per_s": len(episodes) / score_s, "score_s": score_s,
        "accuracy": scores.summary()["accuracy"],
    }


# ------------------------------------------------------------------- report
def render(res: dict[str, Any]) -> str:
    m, t, e = res["machine"], res["training"], res["evaluation"]
    lines = [
        f"bench_student: {res['config']} ({res['experiment']}), student:{t['variant']}, {res['teacher']}",
        f"machine: {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']} with {m['torch_threads']} threads, device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"load average (1/5/15 min): start {m['load_average_start']}, end {m['load_average_end']}",
        "",
        (f"(a) training, {t['episode']}, {t['frames_per_episode']} frames/episode at {t['crop_px']} px, "
        f"{t['tasks']} timed tasks after {t['warmup_tasks']} warm-up ({t['optimizer_steps']} optimiser steps, "
        f"data.num_workers={t['num_workers']}):"),
        (f"    {t['episodes_per_s']:8.3f} episodes/s   {t['frames_per_s']:8.1f} frames/s   "
        f"{t['s_per_episode_median'] * 1e3:8.1f} ms/episode (median)"),
        f"    data    {t['data_s_per_episode'] * 1e3:8.1f} ms/episode ({t['data_fraction'] * 100:.0f}% of wall time)",
        f"    compute {t['compute_s_per_episode'] * 1e3:8.1f} ms/episode (copy, forward, loss, backward, optimiser step)",
        f"    validation on {t['val_episodes']} val episodes after training: {t['validation_s']:.2f} s (not in the rate)",
        "",
        "(b) data loading (EpisodeDataset + episode_loader, train transform, RGB):",
        f"    {'workers':>7s} {'episodes/s':>11s} {'frames/s':>10s} {'start-up s':>11s}",
    ]
    for r in res["loading"]:
        lines.append(f"    {r['num_workers']:7d} {r['episodes_per_s']:11.2f} {r['frames_per_s']:10.0f} {r['startup_s']:11.2f}")
    lines += [
        "",
        f"(c) evaluation, {e['episodes']} test episodes ({e['source']}), {e['videos']} videos, {e['branches']} branch(es):",
        f"    feature extraction {e['extract_videos_per_s']:8.1f} videos/s ({e['extract_frames_per_s']:.0f} frames/s, {e['extract_s']:.2f} s)",
        f"    scoring on cached features {e['score_episodes_per_s']:8.1f} episodes/s ({e['score_s']:.2f} s)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as in mkd run (repeatable)")
    ap.add_argument("--variant", default="lite-mkd", choices=["lite-mkd", "baseline"], help="which student to train")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up tasks (default: one optimiser step)")
    ap.add_argument("--tasks", type=int, default=16, help="timed training tasks (rounded up to whole optimiser steps)")
    ap.add_argument("--workers", default="0,1,2", help="worker counts for (b)")
    ap.add_argument("--load-episodes", type=int, default=12, help="timed episodes per worker count in (b)")
    ap.add_argument("--eval-episodes", type=int, default=300, help="test episodes in (c)")
    ap.add_argument("--val-episodes", type=int, default=5, help="val episodes of the one validation after training")
    ap.add_argument("--with-teacher", action="store_true", help="run the config's teacher stages first if they are not done")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--quiet", action="store_true", help="do not print stage messages")
    args = ap.parse_args(argv)
    args.config_data = read_yaml(args.config)
    echo = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))

    from mkdcore.device import resolve_device

    has_teacher, teacher_note = prepare(args, echo)
    cfg0 = bench_config(args)
    per_batch = cfg0.training.tasks_per_batch
    warmup = args.warmup if args.warmup is not None else per_batch
    round_up = lambda n: -(-n // per_batch) * per_batch
    warmup, timed = round_up(max(warmup, 1)), round_up(max(args.tasks, 1))
    cfg = bench_config(args, warmup + timed, distiller_ce=not has_teacher and args.variant == "lite-mkd")
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    device = resolve_device(cfg.runtime.device)
    res: dict[str, Any] = {"config": str(args.config), "experiment": cfg.name, "overrides": args.set, "teacher": teacher_note,
                           "machine": machine_info(device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(),
                           "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    with tempfile.TemporaryDirectory(prefix="bench-student-") as scratch:
        echo(f"(a) training {warmup} + {timed} tasks of student:{args.variant} ({teacher_note})")
        res["training"], ctx = bench_training(cfg, args.variant, warmup, Path(scratch), device)
        store = ctx.nodes["mm_features"].stage_dir / "features" if has_teacher and args.variant == "lite-mkd" else None
        echo("(b) data loading")
        res["loading"] = bench_loading(cfg, store, [int(w) for w in args.workers.split(",")], 2, args.load_episodes, device)
        echo("(c) evaluation")
        res["evaluation"] = bench_evaluation(cfg, ctx, device)
    res["machine"]["load_average_end"] = load_average()
    print(render(res))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    if sys.argv[1:3] == ["--compare", "plain"]:  # mkd vs plain PyTorch, side by side (compare_plain.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import compare_plain

        compare_plain.main(sys.argv[3:])
    else:
        main()
