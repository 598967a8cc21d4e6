"""Cost of one `mkd predict` query on CPU: ms per query video (decode + sample +
transform + encode + few-shot head), per student backbone at the paper's input (8
frames, shorter side 256, centre crop 224), eager torch vs the ONNX export through
onnxruntime; and what the multi-modal teacher costs for the same query, measured:
derive flow (default plugin: DIS medium) and depth (default backend: a transformers
Depth-Anything-V2-Small network) from the 8 sampled frames, three ResNet-50 encoders
(rgb, depth, flow teachers) and the MFM fusion + TRX head. Run from the repo root:

    .venv/bin/python benchmarks/bench_predict.py [--repeats 5] [--backbones resnet18,mobilenetv3_small,mobilenetv3_large]
        [--no-onnx] [--no-teacher] [--threads N] [--out FILE.json]

Weights are random (latency does not depend on their values): the student folders are
written with the one model builder and `save_model`, exported with `mkd export`'s own
writer, and run through `mkdcore.predict` exactly as `mkd predict` runs them. The
support set is 5-way 5-shot features (random values of the right shape: the head's cost
does not depend on them); the query is a 320x240 MJPG video of 64 frames written with
OpenCV. The depth network is the Depth-Anything-V2-Small architecture built from its
config (no download), run through mkd's depth plugin (HF backend) as `mkd data derive` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WAY, SHOT, FRAMES, RESIZE, CROP = 5, 5, 8, 256, 224


def write_video(path: Path, frames: int = 64, w: int = 320, h: int = 240) -> Path:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for t in range(frames):
        img = np.full((h, w, 3), 40, np.uint8)
        cv2.circle(img, (20 + 4 * t, 60 + t), 25, (0, 0, 255), -1)
        out.write(img)
    out.release()
    return path


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm-up (first-call allocations, onnxruntime graph optimisation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1), "repeats": repeats}


def student_folder(tmp: Path, backbone: str) -> Path:
    from mkdcore.models.build import build
    from mkdcore.models.folder import save_model

    spec = {"type": "fewshot", "frames": FRAMES, "modality": "rgb", "variant": "lite-mkd",
            "backbone": {"name": backbone, "options": {"pooling": "maxmean", "projection": "2fc", "out_dim": 2048}},
            "head": {"name": "trx", "options": {"temporal_set": [2], "out_dim": 1152}},
            "data": {"frames": FRAMES, "resize": RESIZE, "crop": CROP, "normalize": "none"}}
    model, spec = build(spec)
    save_model(tmp / backbone, model, spec)
    return tmp / backbone


def bench_student(folder: Path, query: Path, repeats: int, onnx: bool) -> dict[str, object]:
    from mkdcore import api
    from mkdcore.predict.model import load_predictor
    from mkdcore.predict.predict import encode_query, rank
    from mkdcore.predict.support import SupportSet

    rows: dict[str, object] = {}
    forms = [("eager", folder)]
    if onnx:
        from mkdcore.export.writer import export_model

        export_model(api.load_model(folder), "onnx", WAY, SHOT, folder.with_name(folder.name + "-onnx"))
        forms.append(("onnx", folder.with_name(folder.name + "-onnx")))
    for form, path in forms:
        p = load_predictor(path, "cpu")
        width = int(p.model.card["features"]["width"])
        support = SupportSet(classes=[f"c{i}" for i in range(WAY)], labels=torch.arange(WAY).repeat_interleave(SHOT),
                             features=torch.randn(WAY * SHOT, FRAMES, width), clips=[""] * WAY * SHOT,
                             fingerprint=p.fingerprint, frames=FRAMES)
        from mkdcore.predict.clips import read_clip

        clip = read_clip(query, FRAMES)
        x = p.contract.transform()({"x": clip})["x"][None]
        feats = p.encode(x)
        scorer = p.prepare_head(support.features, support.labels, WAY)  # once per support set, as mkd predict
        rows[form] = {
            "query_ms": timed(lambda: rank(scorer, support, encode_query(p, query), 5), repeats),
            "decode_sample_ms": timed(lambda: read_clip(query, FRAMES), repeats),
            "encode_ms": timed(lambda: p.encode(x), repeats),
            "head_ms": timed(lambda: scorer(feats), repeats),  # per query, support prepared
            "head_unprepared_ms": timed(lambda: p.head(support.features, support.labels, feats, WAY), repeats),
            "prepare_support_ms": timed(lambda: p.prepare_head(support.features, support.labels, WAY), repeats),
        }
        print(f"  {folder.name:18s} {form:5s} {json.dumps(rows[form])}", flush=True)
    return rows


def depth_checkpoint(tmp: Path) -> Path:
    """The Depth-Anything-V2-Small architecture (24.8 M params) with random weights, saved
    as a local transformers folder the depth plugin loads."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518, patch_size=14,
                            out_indices=[3, 6, 9, 12], reshape_hidden_states=False, layerscale_value=1.0)
    cfg = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
                              head_hidden_size=32, reassemble_hidden_size=384, patch_size=14)
    out = tmp / "depth-anything-v2-small-arch"
    DepthAnythingForDepthEstimation(cfg).save_pretrained(out)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_rescale=True, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225], resample=3).save_pretrained(out)
    return out


def bench_teacher(tmp: Path, query: Path, repeats: int) -> dict[str, object]:
    from mkdcore import api
    from mkdcore.modalities.base import Clip
    from mkdcore.data.transforms import ClipTransform
    from mkdcore.predict.clips import read_clip

    flow = api.create("modality", "flow")  # defaults: DIS medium
    flow.setup("cpu")
    depth = api.create("modality", "depth", checkpoint=str(depth_checkpoint(tmp)))
    depth.setup("cpu")
    encoders = {m: api.create("backbone", "resnet50", pooling="avg", projection="none").eval() for m in ("rgb", "depth", "flow")}
    dim = encoders["rgb"].out_dim
    mfm = api.create("fusion", "mfm", dim=dim, seq_len=FRAMES, modalities=["rgb", "depth", "flow"], layers=2, shift=1).eval()
    head = api.create("head", "trx", in_dim=dim, seq_len=FRAMES, temporal_set=[2], out_dim=1152).eval()
    transform = ClipTransform(resize=RESIZE, crop=CROP, train=False)
    support = torch.randn(WAY * SHOT, FRAMES, dim)
    labels = torch.arange(WAY).repeat_interleave(SHOT)
    state: dict[str, object] = {}

    def decode() -> None:
        state["clip"] = read_clip(query, FRAMES)

    def derive() -> None:
        frames = state["clip"].permute(0, 2, 3, 1).numpy()  # type: ignore[union-attr]
        clip = Clip(frames=np.ascontiguousarray(frames))
        state["images"] = {"flow": flow.derive(clip), "depth": depth.derive(clip)}

    def derive_flow() -> None:
        flow.derive(Clip(frames=np.ascontiguousarray(state["clip"].permute(0, 2, 3, 1).numpy())))  # type: ignore[union-attr]

    def derive_depth() -> None:
        depth.derive(Clip(frames=np.ascontiguousarray(state["clip"].permute(0, 2, 3, 1).numpy())))  # type: ignore[union-attr]

    @torch.inference_mode()
    def encode_fuse_head() -> None:
        clips = {"rgb": state["clip"]}
        for m, images in state["images"].items():  # type: ignore[union-attr]
            clips[m] = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        x = transform(clips)
        feats = {m: encoders[m](x[m])["features"][None] for m in encoders}
        fused_q = mfm(feats)
        head(support, labels, fused_q, way=WAY)

    def full() -> None:
        decode(), derive(), encode_fuse_head()

    decode(), derive()
    rows = {"query_ms": timed(full, repeats), "derive_flow_ms": timed(derive_flow, repeats),
            "derive_depth_ms": timed(derive_depth, repeats), "encoders_mfm_head_ms": timed(encode_fuse_head, repeats)}
    print(f"  teacher            {json.dumps(rows)}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backbones", default="resnet18,mobilenetv3_small,mobilenetv3_large")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--no-teacher", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, object] = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "torch": torch.__version__, "load_before": os.getloadavg()[0], "students": {}}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as d:
        tmp = Path(d)
        query = write_video(tmp / "query.avi")
        for name in args.backbones.split(","):
            result["students"][name] = bench_student(student_folder(tmp, name), query, args.repeats, not args.no_onnx)  # type: ignore[index]
        if not args.no_teacher:
            result["teacher"] = bench_teacher(tmp, query, args.repeats)
    result["load_after"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
