"""Stage ``data``: make sure the dataset exists (render the synthetic one when the
config asks for it), that its splits can feed the configured episodes, and that every
frame the later stages will read decodes.

It is the first stage of every experiment, so a broken frame, a too-short video or a
missing listed video fails here, naming every bad video at once, instead of at the
features stage after a teacher has trained.
"""

from __future__ import annotations

import os
from typing import Any

from mkdcore.data.verify import verify_videos
from mkdcore.errors import DataError
from mkdcore.preflight import data_problems, listing, summary
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import all_keys, layout_of

#: decoding processes at most (frame checks are I/O and libjpeg bound)
MAX_WORKERS = 8


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    d = cfg.data
    if d.synth is not None:
        from mkdcore.data.synth import render_dataset

        s = d.synth
        render_dataset(d.root, classes=s.classes, videos_per_class=s.videos_per_class, size=s.size, seed=s.seed, frames=max(8, d.frames))
    counts, problems = data_problems(cfg)
    if problems:
        raise DataError(summary(problems))
    ctx.log(f"splits: {counts}")
    layout = layout_of(cfg)
    keys = all_keys(cfg)
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    bad = verify_videos([layout.video_dir("rgb", k) for k in keys], d.frames, workers=workers)
    if bad:
        listed = [f"{p.relative_to(layout.rgb_dir)}: {why}" for p, why in bad]
        raise DataError(f"{layout.rgb_dir}: {len(bad)} of {len(keys)} videos cannot be read "
                        f"(fix or remove them from the split files): {listing(listed)}")
    ctx.log(f"frames: every frame of {len(keys)} videos decodes")
    return {"splits": counts, "root": str(d.root), "videos_checked": len(keys)}
