"""Stage ``features:<modality>``: the trained teacher's per-frame features for every
video of every split, one ``(T, D)`` .npy per video, keyed by (class, video).

Extraction uses the eval transform (centre crop): the original used training
augmentation here (spec section 8, bug 6)."""

from __future__ import annotations

from typing import Any

from mkdcore.data.features import FeatureStore
from mkdcore.models.folder import load_model
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import all_keys, layout_of, transform_of
from mkdcore.stages.scoring import extract_backbone_features


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    m = ctx.node.params["modality"]
    model, _ = load_model(ctx.nodes[f"teacher:{m}"].files.model, ctx.device)
    store = FeatureStore(ctx.files.features)
    every = all_keys(cfg)
    keys = [k for k in every if not store.exists(k)]  # resumable
    progress = ctx.progress(len(keys), unit="videos")
    progress.start()
    done = 0
    dim = None
    extracted = extract_backbone_features(model.backbone, layout_of(cfg), keys, m, transform_of(cfg, train=False),
                                          cfg.data.frames, ctx.device, cfg.evaluation.batch_frames,
                                          amp=cfg.teacher.training.amp, decode=cfg.runtime.decode)
    for key, feats in extracted:
        store.save(key, feats["features"])
        dim = feats["features"].shape[1]
        done += 1
        progress.update(done)
    progress.finish(done)
    return {"modality": m, "videos": len(every), "extracted": done, "dim": dim, "dir": str(store.dir)}

