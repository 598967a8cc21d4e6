"""Stage ``data``: make sure the dataset exists (render the synthetic one when the
config asks for it) and that its splits can feed the configured episodes."""

from __future__ import annotations

from typing import Any

from mkdcore.errors import DataError
from mkdcore.stages.base import StageContext
from mkdcore.stages.common import layout_of, split_of


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    d = cfg.data
    if d.synth is not None:
        from mkdcore.data.synth import render_dataset

        s = d.synth
        render_dataset(d.root, classes=s.classes, videos_per_class=s.videos_per_class, size=s.size, seed=s.seed, frames=max(8, d.frames))
    layout_of(cfg).rgb_dir  # raises DataError naming the root when absent
    ep = cfg.episodes
    counts: dict[str, Any] = {}
    for which, query in (("train", max(ep.query_train, cfg.teacher.query_train or 0, cfg.fusion.query_train or 0)), ("val", ep.query_test), ("test", ep.query_test)):
        index = split_of(cfg, which)
        counts[which] = {"classes": len(index.classes), "videos": index.num_videos}
        if len(index.classes) < ep.way:
            raise DataError(f"{d.root}: the {which} split has {len(index.classes)} classes, {ep.way}-way episodes need {ep.way} (episodes.way)")
        short = [c for c in index.classes if len(index.videos[c]) < ep.shot + query]
        if short:
            raise DataError(f"{d.root}: class {short[0]} of the {which} split has {len(index.videos[short[0]])} videos; "
                            f"{ep.shot}-shot {query}-query episodes need {ep.shot + query}")
    ctx.log(f"splits: {counts}")
    return {"splits": counts, "root": str(d.root)}
