"""``mkd data derive ROOT --modality NAME``: compute a modality for every video of a dataset."""

from __future__ import annotations

import sys
from typing import Any

import click

from mkdcore.errors import ConfigError


def parse_options(items: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; values parsed as YAML (``3`` -> int, ``true`` -> bool, paths stay strings)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@click.command("derive")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--modality", "-m", required=True, help="Modality plugin name (see `mkd plugins --kind modality`).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Modality option, e.g. -o method=farneback -o encoding=raw2 (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (neural modalities).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes for CPU modalities.")
@click.option("--batch-videos", default=8, show_default=True, type=click.IntRange(min=1), help="Videos per forward pass (neural modalities).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def derive(root: str, modality: str, options: tuple[str, ...], device: str, workers: int,
           batch_videos: int, no_progress: bool, as_json: bool) -> None:
    """Derive MODALITY for every <class>/<video> of ROOT into ROOT/<modality>_l8.

    Resumable (finished videos are skipped), atomic per video (a kill never leaves a
    half-written video), failures listed at the end (exit status 1).
    """
    import json

    from mkdcore.data.derive import derive_dataset

    summary = derive_dataset(root, modality, parse_options(options), device=device, workers=workers,
                             progress=not (no_progress or as_json), batch_videos=batch_videos)  # --json: stdout is JSON only
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(
            f"{modality}: {summary.derived} derived, {summary.skipped} already done, {summary.verified} verified, "
            f"{len(summary.failures)} failed; {summary.frames} frames in {summary.seconds:.1f} s "
            f"({summary.frames_per_s:.1f} frames/s) -> {summary.out_dir}"
        )
        for video, why in summary.failures:
            click.echo(f"failed: {video}: {why}", err=True)
    if summary.failures:
        sys.exit(1)
