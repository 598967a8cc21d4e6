"""mkd's training step against the same network trained the plain way, side by side.

Two child processes train the same model (same weights, same episodes, same loss) for the
same tasks, and the parent alternates them task by task (the order swapped every task), so
machine load affects both sides alike:

* **plain**: what a user writes by hand: eager fp32, NCHW, glibc's default allocator, no
  compile, each episode loaded in the training process right before its step.
* **mkd**: mkd's defaults, applied through the functions training uses
  (:mod:`mkdcore.speed`: allocator, channels_last, autocast, compile; the prefetching
  episode reader of the training stage with ``data.num_workers``).

Each side runs in its own process because the allocator setting is process-wide. Both
report wall seconds and CPU seconds (user + system, all threads) per task; on a loaded
machine the CPU seconds are the steadier measure of the work a step costs.

Models: ``student`` (the config's baseline student: its backbone, e.g. resnet18, and the
TRX head, trained with cross-entropy), ``teacher`` (the per-modality teacher: ResNet-50 +
mean-distance head on RGB frames) and ``mfm`` (the MFM teacher on stored-size random
features: no backbone). Used by ``bench_student.py --compare plain`` and ``gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SIDES = ("plain", "mkd")


# ----------------------------------------------------------------------- the child
def _config(spec: dict[str, Any]):
    """The spec's config as ``mkd run`` loads it (``base:`` files merged, ``--set`` applied)."""
    from mkdcore.config import load_config

    return load_config(spec["config"], spec["set"])


def _side_settings(side: str, cfg, device) -> dict[str, Any]:
    """What each side runs with: mkd's config-resolved defaults, or plain PyTorch."""
    from mkdcore import speed

    if side == "plain":
        return {"malloc": "default", "channels_last": False, "compile": False, "amp": None,
                "num_workers": 0, "threads": cfg.runtime.threads, "decode": "cpu"}
    return {"malloc": cfg.runtime.malloc, "channels_last": speed.wants_channels_last(cfg.runtime.channels_last, device),
            "compile": cfg.runtime.compile, "amp": "per model",
            "num_workers": cfg.data.num_workers, "threads": cfg.runtime.threads, "decode": "n/a"}


def _build(spec: dict[str, Any], cfg):
    """The model of ``spec['model']`` with seed-fixed weights (both sides start equal)."""
    import torch

    from mkdcore.models.build import build, fusion_spec, student_spec, teacher_spec

    torch.manual_seed(cfg.training.seed)
    if spec["model"] == "student":
        return build(student_spec(cfg, "baseline"))[0]
    if spec["model"] == "teacher":
        return build(teacher_spec(cfg, "rgb"))[0]
    return build(fusion_spec(cfg, spec["feature_dim"]))[0]


def _episodes(spec: dict[str, Any], cfg, side: str, settings: dict[str, Any], device) -> Callable[[int], dict[str, Any]]:
    """``task -> batch on device``: frames through mkd's episode reader (prefetching on the
    mkd side, synchronous on the plain side), or seeded random features for ``mfm``."""
    import torch

    from mkdcore.data.episodes import EpisodeSampler
    from mkdcore.data.loader import EpisodeDataset, OrderedEpisodes, to_device
    from mkdcore.stages.dataset import layout_of, split_of, transform_of

    ep = cfg.episodes
    query = ep.query_train
    if spec["model"] == "mfm":
        mods = list(cfg.modalities.names)
        ns, nq = ep.way * ep.shot, ep.way * query

        def features(task: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(task)
            feats = {m: {part: torch.randn(n, cfg.data.frames, spec["feature_dim"], generator=g)
                         for part, n in (("support", ns), ("query", nq))} for m in mods}
            batch = {"features": feats, "support_labels": torch.arange(ep.way).repeat_interleave(ep.shot),
                     "query_labels": torch.arange(ep.way).repeat_interleave(query)}
            return to_device(batch, device)
        return features

    sampler = EpisodeSampler(split_of(cfg, "train"), ep.way, ep.shot, query, seed=cfg.training.seed)
    from mkdcore.data.device_decode import resolve_decode

    # mkd decodes where runtime.decode says (on the GPU when the stage runs there), as training does
    decode = "cpu" if side == "plain" else resolve_decode(cfg.runtime.decode, device)
    settings["decode"] = decode
    dataset = EpisodeDataset(layout_of(cfg), None, sampler, modalities=["rgb"], transform=transform_of(cfg, train=True),
                             frames=cfg.data.frames, num_episodes=spec["tasks"], seed=cfg.training.seed, decode=decode)
    if side == "plain":
        return lambda task: to_device(dataset[task], device)
    reader = OrderedEpisodes(dataset, settings["num_workers"], device)
    return lambda task: to_device(reader.get(task), device)


def child(side: str, spec: dict[str, Any]) -> None:
    """Run tasks as the parent asks (one ``<task>`` line each), answer one JSON line each."""
    from mkdcore import speed
    from mkdcore.device import resolve_device

    cfg = _config(spec)
    device = resolve_device(cfg.runtime.device)
    settings = _side_settings(side, cfg, device)
    speed.apply_process_settings(settings["threads"], settings["malloc"])
    import torch
    import torch.nn.functional as F

    model = _build(spec, cfg).to(device).train()
    if side != "plain":  # autocast follows training.amp and the model (mkdcore.speed.amp_dtype)
        settings["amp"] = speed.amp_dtype(cfg.training.amp, device, model)
    run_model = speed.prepare_model(model, settings["channels_last"], settings["compile"])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    tpb = cfg.training.tasks_per_batch
    batch_of = _episodes(spec, cfg, side, settings, device)
    amp = settings["amp"]

    def task(i: int) -> float:
        batch = batch_of(i)
        ctx = torch.autocast(device.type, dtype=amp) if amp is not None else torch.autocast(device.type, enabled=False)
        with ctx:
            if spec["model"] == "mfm":
                f = batch["features"]
                out = run_model({m: v["support"] for m, v in f.items()}, batch["support_labels"],
                                {m: v["query"] for m, v in f.items()}, way=cfg.episodes.way)
            else:
                fr = batch["frames"]["rgb"]
                out = run_model(fr["support"], batch["support_labels"], fr["query"], way=cfg.episodes.way)
            loss = F.cross_entropy(out["logits"].float(), batch["query_labels"]) / tpb
        loss.backward()
        if (i + 1) % tpb == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    util = GpuUtilisation(device)
    print(json.dumps({"ready": True, "settings": {k: str(v) for k, v in settings.items()}}), flush=True)
    for line in sys.stdin:
        i = int(line)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        w0, c0 = time.perf_counter(), time.process_time()
        with util:
            loss = task(i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        record = {"task": i, "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "loss": loss,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device.type == "cuda":
            record["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            record["gpu_util_pct"] = util.mean
        print(json.dumps(record), flush=True)


class GpuUtilisation:
    """NVML's GPU utilisation sampled every 20 ms while a task runs (``mean`` of the last
    task, None without a GPU or NVML)."""

    def __init__(self, device) -> None:
        self.handle, self.mean, self.samples = None, None, []
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self.nvml = pynvml
        except Exception:  # noqa: BLE001 - NVML missing or unusable: no utilisation column
            self.handle = None

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __enter__(self) -> "GpuUtilisation":
        if self.handle is not None:
            import threading

            self.samples, self._stop = [], threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self._stop.set()
            self._thread.join()
            self.mean = sum(self.samples) / len(self.samples) if self.samples else None


# ----------------------------------------------------------------------- the parent
class Side:
    """One child process and its per-task records."""

    def __init__(self, name: str, spec: dict[str, Any], label: str | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.name = label or name
        self.proc = subprocess.Popen([sys.executable, __file__, "--side", name, "--spec", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.settings: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []

    def ready(self) -> "Side":
        """Wait for the side's hello (torch imported, model built). Sides are started
        first and waited for after, so their start-ups overlap; tasks are timed only
        once every side is ready."""
        self.settings = self._read()["settings"]
        return self

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} side exited with code {self.proc.wait()}")
        return json.loads(line)

    def run(self, task: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{task}\n")
        self.proc.stdin.flush()
        rec = self._read()
        self.records.append(rec)
        return rec

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=120)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def compare(spec: dict[str, Any], warmup: int, timed: int, echo: Callable[[str], None] = print,
            variants: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Alternate the sides for ``warmup + timed`` tasks; per-side medians of the timed
    tasks, their ratio (plain / mkd: above 1 means mkd is faster) and peaks.

    ``variants``: extra mkd sides, each mkd's defaults plus config overrides (e.g.
    ``{"compile": ["runtime.compile=true"]}``), to measure a candidate default."""
    spec = {**spec, "tasks": warmup + timed}
    names = list(SIDES) + list(variants or {})
    sides = {name: Side("plain" if name == "plain" else "mkd", {**spec, "set": spec["set"] + (variants or {}).get(name, [])},
                        label=name) for name in names}
    try:
        for side in sides.values():
            side.ready()
        for i in range(warmup + timed):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                rec = sides[name].run(i)
                echo(f"  task {i:3d} {name:5s} {rec['wall_s']:7.3f} s wall {rec['cpu_s']:7.3f} s cpu")
    finally:
        for s in sides.values():
            s.close()
    out: dict[str, Any] = {"model": spec["model"], "tasks": timed, "warmup": warmup}
    for name, s in sides.items():
        timed = s.records[warmup:]
        out[name] = {"s_per_task_wall": _median([r["wall_s"] for r in timed]),
                     "s_per_task_cpu": _median([r["cpu_s"] for r in timed]),
                     "peak_rss_mib": max(r["peak_rss_mib"] for r in s.records),
                     "first_loss": s.records[0]["loss"],
                     "settings": s.settings}
        if "peak_gpu_mib" in s.records[-1]:
            out[name]["peak_gpu_mib"] = s.records[-1]["peak_gpu_mib"]
            utils = [r["gpu_util_pct"] for r in timed if r.get("gpu_util_pct") is not None]
            out[name]["gpu_util_pct"] = sum(utils) / len(utils) if utils else None
    for name in list(variants or {}):
        out[name]["speedup_wall"] = out["plain"]["s_per_task_wall"] / out[name]["s_per_task_wall"]
        out[name]["speedup_cpu"] = out["plain"]["s_per_task_cpu"] / out[name]["s_per_task_cpu"]
    out["variants"] = list(variants or {})
    out["speedup_wall"] = out["plain"]["s_per_task_wall"] / out["mkd"]["s_per_task_wall"]
    out["speedup_cpu"] = out["plain"]["s_per_task_cpu"] / out["mkd"]["s_per_task_cpu"]
    out["differs"] = {k: {"plain": out["plain"]["settings"][k], "mkd": v}
                      for k, v in out["mkd"]["settings"].items() if out["plain"]["settings"][k] != v}
    return out


def render(res: dict[str, Any]) -> str:
    p, m = res["plain"], res["mkd"]
    lines = [f"{res['model']}: {res['tasks']} timed tasks after {res['warmup']} warm-up, median per task",
             f"  plain {p['s_per_task_wall']:.3f} s wall {p['s_per_task_cpu']:.3f} s cpu  peak RSS {p['peak_rss_mib']:.0f} MiB",
             f"  mkd   {m['s_per_task_wall']:.3f} s wall {m['s_per_task_cpu']:.3f} s cpu  peak RSS {m['peak_rss_mib']:.0f} MiB",
             f"  mkd is {res['speedup_wall']:.2f}x plain (wall), {res['speedup_cpu']:.2f}x (cpu time)",
             "  settings that differ: " + ", ".join(f"{k}={v['mkd']} (plain {v['plain']})" for k, v in res["differs"].items())]
    for name in res.get("variants", []):
        v = res[name]
        lines.append(f"  variant {name}: {v['s_per_task_wall']:.3f} s wall {v['s_per_task_cpu']:.3f} s cpu, "
                     f"{v['speedup_wall']:.2f}x plain (wall), {v['speedup_cpu']:.2f}x (cpu)")
    if "peak_gpu_mib" in m:
        util = lambda x: "n/a" if x is None else f"{x:.0f}%"
        lines.insert(3, f"  peak GPU memory plain {p['peak_gpu_mib']:.0f} MiB, mkd {m['peak_gpu_mib']:.0f} MiB; "
                        f"GPU utilisation plain {util(p['gpu_util_pct'])}, mkd {util(m['gpu_util_pct'])}")
    return "\n".join(lines)


# ----------------------------------------------------------------------- the matrix
def _size_overrides(root: Path, crop: int) -> list[str]:
    """A small synthetic set rendered at ``crop`` px (plus the resize margin), 5-way
    5-shot 5-query tasks: the episode size of the paper's training."""
    resize = crop + crop // 8
    return [f"data.root={root / f'synth_{crop}'}", f"data.resize={resize}", f"data.crop={crop}",
            f"data.synth={{classes: 24, videos_per_class: 12, size: {resize}, seed: 0}}",
            "episodes.way=5", "episodes.shot=5", "episodes.query_train=5", f"runtime.runs_dir={root / 'runs'}"]


def matrix(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every requested (model, backbone, size), each compared once."""
    from mkdcore.stages.runner import run_experiment

    common = [f"runtime.device={args.device}"] + ([f"runtime.threads={args.threads}"] if args.threads else [])
    scratch = Path(args.scratch)
    jobs: list[tuple[str, str, int, list[str]]] = []
    for model in args.models.split(","):
        if model == "mfm":
            jobs.append((model, "-", 0, ["fusion.module={name: mfm}", "fusion.head={name: trx, options: {temporal_set: [2, 3]}}",
                                         "modalities.names=[rgb, depth, flow]"]))
            continue
        for size in (int(x) for x in args.sizes.split(",")):
            if model == "teacher":
                jobs.append((model, "resnet50", size, ["teacher.backbone={name: resnet50, options: {pooling: avg, projection: none}}"]))
            else:
                for bb in args.backbones.split(","):
                    jobs.append((model, bb, size, [f"student.backbone.name={bb}",
                                                    "student.head={name: trx, options: {temporal_set: [2, 3]}}"]))
    results = []
    for model, backbone, size, extra in jobs:
        overrides = common + (_size_overrides(scratch, size) if size else _size_overrides(scratch, 64)) + extra + list(args.set)
        if size:
            cfg = _config({"config": str(args.config), "set": overrides})
            run_experiment(cfg, stages=["data"], echo=lambda m: print(m, file=sys.stderr))
        spec = {"config": str(args.config), "set": overrides, "model": model, "feature_dim": args.feature_dim}
        print(f"== {model} {backbone} {size or ''} px", file=sys.stderr, flush=True)
        variants = {v.split(":", 1)[0]: v.split(":", 1)[1].split(";") for v in args.variant}
        res = compare(spec, args.warmup, args.tasks, echo=lambda m: print(m, file=sys.stderr, flush=True), variants=variants)
        res.update(backbone=backbone, size_px=size or None, spec=spec)
        print(render(res), flush=True)
        results.append(res)
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    import tempfile

    ap = argparse.ArgumentParser(prog="bench_student.py --compare plain", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--models", default="student", help="student,teacher,mfm")
    ap.add_argument("--backbones", default="resnet18,mobilenetv3_small,mobilenetv3_large", help="student backbones")
    ap.add_argument("--sizes", default="112", help="crop sizes in px, e.g. 112,224")
    ap.add_argument("--feature-dim", type=int, default=2048, help="per-modality feature width for mfm (paper: 2048)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed tasks per side first")
    ap.add_argument("--tasks", type=int, default=6, help="timed tasks per side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per side (default: torch's)")
    ap.add_argument("--scratch", default=None, help="where the synthetic data is rendered (default: a temp dir)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[;KEY=VALUE]",
                    help="an extra mkd side with overrides, e.g. compile:runtime.compile=true (repeatable)")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mkd-compare-") as tmp:
        args.scratch = args.scratch or tmp
        results = matrix(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    if "--side" not in sys.argv:
        main()
        sys.exit(0)
    ap = argparse.ArgumentParser(description="one side of the plain-vs-mkd comparison (started by compare())")
    ap.add_argument("--side", choices=SIDES, required=True)
    ap.add_argument("--spec", required=True)
    a = ap.parse_args()
    child(a.side, json.loads(a.spec))
