"""Data-parallel training throughput: tasks/s of the training engine on 1 and 2 ranks.

    .venv/bin/python benchmarks/bench_ddp.py [--device cpu|cuda] [--ranks 1,2] [--tasks 24]
        [--tasks-per-batch 4] [--threads N] [--config configs/smoke.yaml] [--set KEY=VALUE ...] [--out FILE.json]

What runs is the pipeline's own code: the student network of the config
(``models.build.build(student_spec(cfg, "baseline"))``: backbone + TRX head), trained by
:class:`mkdcore.engine.EpisodicTrainer` with CE on synthetic episodes (random frames of
the config's size, a pure function of the task index), launched by
:func:`mkdcore.distributed.launch` exactly as ``mkd run --devices N`` launches a stage
(spawned ranks, gloo on CPU, NCCL on CUDA; torch threads per rank = cores / ranks).
No JPEG decoding: this measures the engine's split, gradient sum and BatchNorm sync, not
the loader. The rate counts the tasks after the first optimiser step (warm-up) and
leaves out process start-up; start-up seconds are reported separately.

On one GPU only ``--ranks 1`` can run (NCCL needs a device per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rank_body(cfg_path: str, overrides: list[str], tasks: int, per_batch: int, stage_dir: str) -> dict[str, Any]:
    """One rank: build the student, train ``tasks`` synthetic episodes, time them."""
    import torch
    import torch.nn.functional as F

    from mkdcore import distributed
    from mkdcore.config import TrainingConfig, load_config
    from mkdcore.engine import EpisodicTrainer, StepOutput, seed_everything, task_seed
    from mkdcore.models.build import build, student_spec

    cfg = load_config(Path(cfg_path), overrides)
    r = distributed.current()
    device = distributed.rank_device(torch.device("cuda" if torch.cuda.is_available() and cfg.runtime.device != "cpu" else "cpu"), r.rank)
    seed_everything(0)
    model, _ = build(student_spec(cfg, "baseline"), None)
    model.to(device)
    ep, T, S = cfg.episodes, cfg.data.frames, cfg.data.crop
    way, shot, query = ep.way, ep.shot, ep.query_train
    training = TrainingConfig(lr=1e-3, tasks=tasks, tasks_per_batch=per_batch, checkpoint_every=10**9,
                              val_every=10**9, log_every=per_batch, seed=0)
    marks: dict[str, float] = {}

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        if task == per_batch + r.rank * (per_batch // r.world) and "warm" not in marks:  # first task after warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks["warm"] = time.perf_counter()
        g = torch.Generator().manual_seed(task_seed(0, task))
        sup = torch.rand(way * shot, T, 3, S, S, generator=g).to(device)
        qry = torch.rand(way * query, T, 3, S, S, generator=g).to(device)
        sl = torch.arange(way).repeat_interleave(shot).to(device)
        ql = torch.arange(way).repeat_interleave(query).to(device)
        out = m(sup, sl, qry)
        loss = F.cross_entropy(out["logits"], ql) / per_batch
        return StepOutput(loss, {}, int((out["logits"].argmax(1) == ql).sum()), len(ql))

    trainer = EpisodicTrainer(model, training, Path(stage_dir) / f"w{r.world}", device, step)
    trainer.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    end = time.perf_counter()
    return {"seconds": end - marks["warm"], "timed_tasks": tasks - per_batch, "device": str(device),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "smoke.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--tasks", type=int, default=24)
    p.add_argument("--tasks-per-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank (default: cores / ranks, as mkd run)")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch

    from mkdcore.distributed import launch

    overrides = [f"runtime.device={a.device}", *a.overrides]
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for world in [int(x) for x in a.ranks.split(",")]:
            if a.device == "cuda" and torch.cuda.device_count() < world:
                print(f"ranks={world}: skipped, {torch.cuda.device_count()} CUDA device(s)")
                continue
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = launch(rank_body, (a.config, overrides, a.tasks, a.tasks_per_batch, tmp), world,
                         torch.device(a.device), a.threads)
            wall = time.perf_counter() - t0
            rate = res["timed_tasks"] / res["seconds"]
            row = {"ranks": world, "tasks_per_s": round(rate, 3), "timed_tasks": res["timed_tasks"],
                   "train_s": round(res["seconds"], 2), "startup_and_warmup_s": round(wall - res["seconds"], 2),
                   "threads_per_rank": res["threads"], "device": res["device"], "load_1min_before": round(load0, 2),
                   "load_1min_after": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(json.dumps(row))
    if len(rows) >= 2:
        print(f"speed-up {rows[-1]['ranks']} ranks vs {rows[0]['ranks']}: {rows[-1]['tasks_per_s'] / rows[0]['tasks_per_s']:.2f}x")
    report = {"command": " ".join(sys.argv), "config": a.config, "overrides": overrides, "cores": cores,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else None, "rows": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
