"""The GPU check: one script, under 5 minutes on one GPU, that says how fast mkd trains there.

    bash benchmarks/gpu_check.sh            # on a CUDA machine
    bash benchmarks/gpu_check.sh --cpu      # the same code path at tiny sizes on CPU (tested)

For the ResNet-18 student at 224 px and the per-modality ResNet-50 teacher (5-way 5-shot
5-query training tasks, 8 frames), plain PyTorch vs mkd's defaults side by side
(``compare_plain.py``: same weights, same episodes, alternating task by task), it prints
tasks/s, GPU utilisation (NVML, sampled while each task runs), peak GPU memory and MFU:
model FLOPs of a training task (3x the forward FLOPs that ``mkd profile`` counts, the usual
forward+backward estimate) over the measured time, divided by the card's dense bf16 peak
(``--peak-tflops``; known cards are looked up). Then frames/s of JPEG decoding, CPU vs the
GPU batch decoder (``gpu_decode_check.py``, when present). ``--out DIR`` keeps the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_plain  # noqa: E402

#: dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets, SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "RTX 4090": 165.0}


#: ``--cpu``: the smallest tasks and synthetic set the comparison's checks accept (2-way
#: 1-shot 1-query tasks; 8 classes split 4/2/2 feed 2-way train, val and test episodes;
#: 3 videos a class cover the quickstart teacher's 2 training queries), narrow widths
TINY = ["episodes.way=2", "episodes.shot=1", "episodes.query_train=1", "data.synth.classes=8",
        "data.synth.videos_per_class=3", "student.backbone.options.out_dim=16", "student.head.options.out_dim=16"]
#: ``--cpu``: gpu_decode_check.py on one 2-way 1-shot 1-query episode of 4 frames, 48 px
TINY_DECODE = ["--episodes", "1", "--size", "48", "--frames", "4", "--way", "2", "--shot", "1", "--query", "1"]


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def training_tflop(spec: dict[str, Any]) -> float:
    """TFLOP of one training task of the compared model: 3 x the forward FLOPs."""
    from mkdcore.models.profile import profile_episode

    cfg = compare_plain._config(spec)
    model = compare_plain._build(spec, cfg)
    ep = cfg.episodes
    cost = profile_episode(model, ep.way, ep.shot, ep.query_train, cfg.data.frames, cfg.data.crop)
    return 3 * float(cost["gflops"]) / 1e3


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on CPU: checks the script, measures nothing useful")
    ap.add_argument("--tasks", type=int, default=None, help="timed tasks per side (default 8 on GPU, 1 on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: looked up)")
    ap.add_argument("--models", default="student,teacher", help="which of student,teacher to compare")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json")
    args = ap.parse_args(argv)
    import torch

    t0 = time.time()
    if args.cpu:
        device, size, tasks, warmup = "cpu", 32, args.tasks or 1, 0
        runs = [("student", "mobilenetv3_small", TINY), ("teacher", "resnet50", TINY)]
        card = "cpu"
        decode_args = TINY_DECODE
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device (run with --cpu to check the script)")
        device, size, tasks, warmup = "cuda", 224, args.tasks or 8, 3
        runs = [("student", "resnet18", ["data.num_workers=6"]), ("teacher", "resnet50", ["data.num_workers=6"])]
        card = torch.cuda.get_device_name(0)
        decode_args = []
    runs = [r for r in runs if r[0] in args.models.split(",")]
    peak = args.peak_tflops or peak_tflops(card)
    print(f"gpu_check on {card} (torch {torch.__version__}), dense bf16 peak {peak or 'unknown'} TFLOP/s", flush=True)
    import tempfile

    decode = HERE / "gpu_decode_check.py"
    decode_cmd = [sys.executable, str(decode), *decode_args]
    # on CPU nothing is measured: the decode check runs beside the comparison; on a GPU it
    # runs after it, so that nothing else shares the card while either measures
    beside = subprocess.Popen(decode_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) \
        if args.cpu and decode.is_file() else None
    results: dict[str, Any] = {"card": card, "torch": torch.__version__, "peak_bf16_tflops": peak, "runs": []}
    try:
        with tempfile.TemporaryDirectory(prefix="mkd-gpu-check-") as scratch:
            for model, backbone, extra in runs:
                sets = sum((["--set", s] for s in extra), [])
                (res,) = compare_plain.main(["--models", model, "--backbones", backbone, "--sizes", str(size), "--device", device,
                                             "--warmup", str(warmup), "--tasks", str(tasks), "--scratch", scratch, *sets])
                tflop = training_tflop(res["spec"])
                res["train_tflop_per_task"] = tflop
                for side in ("plain", "mkd"):
                    r = res[side]
                    r["tasks_per_s"] = 1 / r["s_per_task_wall"]
                    r["achieved_tflops"] = tflop / r["s_per_task_wall"]
                    r["mfu"] = r["achieved_tflops"] / peak if peak else None
                results["runs"].append(res)
                mfu = lambda r: "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
                print(f"  {model} {backbone} {size}px: {tflop:.2f} TFLOP/task; tasks/s plain {res['plain']['tasks_per_s']:.2f}, "
                      f"mkd {res['mkd']['tasks_per_s']:.2f}; MFU plain {mfu(res['plain'])}, mkd {mfu(res['mkd'])}", flush=True)
    except BaseException:
        if beside is not None:
            beside.kill()
        raise
    if decode.is_file():
        proc = beside or subprocess.Popen(decode_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate(timeout=240)
        print(stdout.strip() or stderr.strip().splitlines()[-1:], flush=True)
        results["decode"] = stdout.strip()
    results["wall_s"] = time.time() - t0
    print(f"gpu_check done in {results['wall_s']:.0f} s", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
