"""Stage ``derive:<modality>``: write ``<root>/<modality>_l8`` from the RGB frames
(or verify ground-truth frames that are already there, e.g. the synthetic dataset's)."""

from __future__ import annotations

from typing import Any

from mkdcore.config import Component
from mkdcore.errors import DataError
from mkdcore.stages.base import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from mkdcore.data.derive import derive_dataset

    m = ctx.node.params["modality"]
    comp = ctx.cfg.modalities.derive.get(m, Component(name=m))
    summary = derive_dataset(ctx.cfg.data.root, comp.name, dict(comp.options), device=str(ctx.device), workers=max(1, ctx.cfg.data.num_workers), progress=None)
    failed = getattr(summary, "failed", None) or []
    if failed:
        raise DataError(f"derive {m}: {len(failed)} videos failed, first: {failed[0]}")
    out = summary.__dict__ if hasattr(summary, "__dict__") else dict(summary)
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool))}
