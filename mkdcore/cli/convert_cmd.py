"""``mkd convert CHECKPOINT -o OUT``: an original Lite-MKD checkpoint as an mkd model folder."""

from __future__ import annotations

from pathlib import Path

import click

from mkdcore.convert import BACKBONES, KINDS


@click.command("convert")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Model folder to write (model.json + weights).")
@click.option("--kind", type=click.Choice(KINDS), help="What the checkpoint holds (default: told by its key names).")
@click.option("--backbone", type=click.Choice(BACKBONES), help="Student/teacher trunk (default: told by its keys; checked when given).")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True, help="Frames per clip the model was trained with.")
@click.option("--modality", default="rgb", show_default=True, help="teacher-baseline: the modality it was trained on.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root recorded in the card (mkd eval's default --root).")
@click.option("--split", help="Split folder recorded in the card (e.g. ucf_ARN).")
def convert(checkpoint: Path, out: Path, kind: str | None, backbone: str | None, frames: int, modality: str,
            root: Path | None, split: str | None) -> None:
    """Convert CHECKPOINT, a checkpoint of the original Lite-MKD code (student, no-KD
    baseline, MFM teacher, per-modality Baseline teacher; wrapped or bare, with or
    without DataParallel 'module.' prefixes), into the mkd model folder OUT.

    Keys are mapped by name; a key no rule maps, an mkd weight without a source, or a
    shape that differs stops the conversion with one line. A converted student evaluates
    with `mkd eval OUT --episodes FILE --root DATA`; a converted MFM teacher serves
    distillation as `teacher.checkpoint` (with `teacher.features`)."""
    from mkdcore.convert.convert import convert_file

    conv = convert_file(checkpoint, out, kind, backbone, frames, modality, root, split)
    click.echo(f"{checkpoint} -> {out}")
    click.echo(f"  {conv.summary()}")
    for key, why in sorted(conv.keys.dropped.items()):
        click.echo(f"  dropped {key}: {why}")
