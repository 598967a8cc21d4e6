"""Stage ``mm_features``: the MFM teacher's fused ``(T, D)`` feature of every video
(the same ``fuse`` forward as in training, eval mode: dropout off)."""

from __future__ import annotations

from typing import Any

import torch

from mkdcore.data.features import FeatureStore
from mkdcore.models.folder import load_model
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import all_keys
from mkdcore.stages.scoring import feature_caches_for


@torch.no_grad()
def run(ctx: StageContext, batch: int = 64) -> dict[str, Any]:
    cfg = ctx.cfg
    model, spec = load_model(ctx.nodes["fuse"].files.model, ctx.device)
    # the per-modality features the MFM teacher was trained on (the fuse stage's inputs)
    features = [ctx.nodes[d] for d in ctx.nodes["fuse"].deps]
    stores = {n.params["modality"]: n.files.features for n in features}
    out = FeatureStore(ctx.files.features)
    every = all_keys(cfg)
    keys = [k for k in every if not out.exists(k)]
    caches = feature_caches_for(stores, keys, cfg.data.frames)
    progress = ctx.progress(len(keys), unit="videos")
    progress.start()
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        feats = {m: torch.stack([torch.from_numpy(c[k]) for k in chunk]).to(ctx.device) for m, c in caches.items()}
        fused = model.fuse(feats).float().cpu().numpy()
        for key, arr in zip(chunk, fused):
            out.save(key, arr)
        progress.update(i + len(chunk))
    progress.finish(len(keys))
    return {"videos": len(every), "extracted": len(keys), "dim": spec["dim"], "dir": str(out.dir)}
