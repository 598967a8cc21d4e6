"""``mkd data synth``: render the synthetic action dataset (see :mod:`mkdcore.data.synth`)."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset root to write.")
@click.option("--classes", type=int, default=20, show_default=True, help="Number of action classes (the first C actions).")
@click.option("--videos-per-class", type=int, default=10, show_default=True, help="Videos rendered per class.")
@click.option("--size", type=int, default=112, show_default=True, help="Frame width and height (px).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical files.")
@click.option("--frames", type=int, default=8, show_default=True, help="Frames per video, covering the whole action.")
@click.option("--workers", type=int, default=1, show_default=True, help="Rendering processes (the output does not depend on it).")
def synth(out: Path, classes: int, videos_per_class: int, size: int, seed: int, frames: int, workers: int) -> None:
    """Render stick-figure actions as rgb_l8/, depth_l8/, skeleton_l8/ plus splits/synth/.

    Reruns skip finished videos, so an interrupted run can simply be started again.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    from mkdcore.data.synth import SPLIT_NAME, SynthParams, manifest, render_dataset
    from mkdcore.progress import plain_callback

    params = SynthParams(classes, videos_per_class, size, seed, frames)
    params.validate()  # before the progress bar: bad input is one line
    start = time.perf_counter()
    counts = {"first": None, "done": 0}

    console = Console(stderr=True)  # stdout keeps only the summary line
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("rendering", total=classes * videos_per_class)
        plain = plain_callback("synth", "videos")  # lines on stdout when it is a log, not a terminal

        def progress(done: int, total: int) -> None:
            if counts["first"] is None:
                counts["first"] = done
            counts["done"] = done
            bar.update(task, completed=done)
            plain(done, total)

        render_dataset(out, classes, videos_per_class, size, seed, frames, workers, progress=progress)
    elapsed = time.perf_counter() - start
    skipped = counts["first"] or 0
    rendered = counts["done"] - skipped
    splits = manifest(params)["splits"]
    rate = f", {rendered / elapsed:.1f} videos/s" if rendered else ""
    click.echo(
        f"{out}: {classes * videos_per_class} videos ({rendered} rendered, {skipped} already done) "
        f"in {elapsed:.1f} s{rate}; split '{SPLIT_NAME}': "
        + ", ".join(f"{k} {len(v)} classes" for k, v in splits.items())
    )
