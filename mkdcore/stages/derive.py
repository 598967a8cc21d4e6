"""Stage ``derive:<modality>``: write ``<root>/<modality>_l8`` from the RGB frames
(or verify ground-truth frames that are already there, e.g. the synthetic dataset's).

The frames are tied to the options that made them by the folder's stamp (see
:mod:`mkdcore.data.derive`); ``--force derive:<m>`` derives every video again."""

from __future__ import annotations

from typing import Any

from mkdcore.config import Component
from mkdcore.errors import DataError
from mkdcore.stages.base import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from mkdcore.data.derive import derive_dataset

    m = ctx.node.params["modality"]
    comp = ctx.cfg.modalities.derive.get(m, Component(name=m))
    summary = derive_dataset(ctx.cfg.data.root, comp.name, dict(comp.options), device=str(ctx.device),
                             workers=max(1, ctx.cfg.data.num_workers), progress=True, force=ctx.forced)
    if summary.replaced:
        ctx.log(summary.replaced)
    if summary.failures:
        video, why = summary.failures[0]
        raise DataError(f"derive {m}: {len(summary.failures)} of {summary.videos} videos failed "
                        f"(first: {video}: {why}); see `mkd data derive {ctx.cfg.data.root} -m {comp.name}`")
    return {k: v for k, v in summary.as_dict().items() if k != "failures"}
