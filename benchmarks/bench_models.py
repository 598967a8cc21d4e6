"""Speed of the model pieces on this machine (CPU or CUDA): run on demand, not in tests.

    .venv/bin/python benchmarks/bench_models.py [--device cuda] [--size 112] [--frames 8]

Prints, for a 5-way 5-shot training episode (5 queries per class) of the Lite-MKD student
(two-branch backbone + shared TRX {2}) and the D2M loss: forward+backward seconds per
episode and frames/s; the TRX head alone; the MFM
fusion at paper width on stored-feature sized inputs; and the profiler's wall time.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mkdcore import api
from mkdcore.models.fewshot import FewShotModel


def timeit(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=112, help="crop px")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--backbones", default="resnet18,mobilenetv3_small,mobilenetv3_large")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    way, shot, query, T = 5, 5, 5, args.frames
    labels = torch.arange(way, device=dev).repeat_interleave(shot)
    qlabels = torch.arange(way, device=dev).repeat_interleave(query)
    d2m = api.create("distiller", "d2m")
    teacher = {"logits": torch.randn(way * query, way, device=dev), "relations": torch.randn(way, way - 1, device=dev)}
    print(f"device {dev}, {way}-way {shot}-shot {query} queries/class, {T} frames, {args.size}px")
    for name in args.backbones.split(","):
        model = FewShotModel(
            api.create("backbone", name, projection="2fc"), api.create("head", "trx", temporal_set=[2], seq_len=T)
        ).to(dev).train()
        s = torch.rand(way * shot, T, 3, args.size, args.size, device=dev)
        q = torch.rand(way * query, T, 3, args.size, args.size, device=dev)

        def step(model=model, s=s, q=q):
            model.zero_grad(set_to_none=True)
            d2m(model(s, labels, q), teacher, qlabels)["total"].backward()

        sec = timeit(step, args.repeat, dev)
        frames = (way * shot + way * query) * T
        print(f"  {name:18s} train episode fwd+bwd {sec:7.3f} s  ({frames / sec:8.1f} frames/s)")

    head = api.create("head", "trx", temporal_set=[2, 3], seq_len=T).to(dev).eval()
    sf = torch.randn(way * shot, T, 2048, device=dev)
    qf = torch.randn(way * query, T, 2048, device=dev)
    with torch.no_grad():
        vec = timeit(lambda: head(sf, labels, qf), args.repeat, dev)
    print(f"  TRX {{2,3}} head alone (2048->1152, 25 support + 25 query clips): {vec * 1e3:7.1f} ms")

    mfm = api.create("fusion", "mfm", seq_len=T).to(dev).eval()
    x = {m: torch.randn(30, T, 2048, device=dev) for m in ("rgb", "depth", "flow")}
    with torch.no_grad():
        sec = timeit(lambda: mfm(x), args.repeat, dev)
    print(f"  MFM (0.55 B params) on 30 videos: {sec * 1e3:7.1f} ms ({30 / sec:.1f} videos/s)")

    from mkdcore.models.profile import profile_episode

    t = time.perf_counter()
    with torch.device("meta"):
        m = FewShotModel(api.create("backbone", "resnet50"), api.create("head", "trx"))
    r = profile_episode(m)
    print(f"  profile ResNet-50 + TRX {{2,3}} (meta): {r['gmacs']:.2f} GMACs in {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
