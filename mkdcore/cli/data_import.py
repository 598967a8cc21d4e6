"""``mkd data import VIDEOS_DIR --out ROOT``: raw videos -> 8 JPEG frames per video."""

from __future__ import annotations

import sys

import click


@click.command("import")
@click.argument("videos_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Dataset root to write (frames go to OUT/rgb_l8).")
@click.option("--frames", default=8, show_default=True, help="Frames kept per video (uniformly spaced).")
@click.option("--workers", default=1, show_default=True, help="Decoding processes.")
@click.option("--size", "size", default=None, type=int, help="Resize so the shorter side is SIZE px (default: keep).")
@click.option("--min-frames", default=1, show_default=True, type=click.IntRange(min=1),
              help="Refuse videos with fewer decodable frames (shorter ones get repeated frames, with a warning).")
def import_videos(videos_dir: str, out: str, frames: int, workers: int, size: int | None, min_frames: int) -> None:
    """Decode the videos in VIDEOS_DIR/<class>/*.{avi,mp4,webm,...} into OUT.

    Resumable: videos already imported are skipped. Videos that cannot be decoded (or
    have fewer than --min-frames frames) are listed at the end (exit status 1) after all
    the others are done. A video with fewer frames than --frames is imported with
    repeated frames and a warning naming it; a folder with no videos is an error.
    """
    from pathlib import Path

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from mkdcore.data.importer import find_videos
    from mkdcore.data.importer import import_videos as run_import
    from mkdcore.progress import plain_callback

    jobs = find_videos(Path(videos_dir), Path(out) / "rgb_l8")
    console = Console(stderr=True)
    plain = plain_callback("import", "videos")  # lines on stdout when it is a log, not a terminal

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done)
        plain(done, total)

    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("import", total=len(jobs))
        result = run_import(
            videos_dir, out, frames=frames, workers=workers, size=size, jobs=jobs, min_frames=min_frames,
            progress=progress,
        )
    for source, why in result.warnings:
        click.echo(f"warning: {source}: {why}", err=True)
    click.echo(f"{len(result.done)} imported, {len(result.skipped)} already done, {len(result.failed)} failed -> {Path(out) / 'rgb_l8'}")
    if result.failed:
        for source, why in result.failed:
            click.echo(f"failed: {source}: {why}", err=True)
        sys.exit(1)
