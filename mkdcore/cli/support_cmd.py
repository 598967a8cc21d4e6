"""``mkd support build DIR --model MODEL -o support.npz``: encode labelled examples once,
so each later query costs one backbone pass."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("support")
def support() -> None:
    """Support sets (labelled example clips) for `mkd predict`."""


@support.command("build")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, type=click.Path(path_type=Path), help="Trained model folder (or its ONNX export).")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Where to write the .npz.")
@click.option("--device", default="auto", show_default=True)
def build(folder: Path, model: Path, out: Path, device: str) -> None:
    """Encode FOLDER/<class>/<clip> (video files or frame folders) with MODEL into OUT."""
    from mkdcore.predict.model import load_predictor
    from mkdcore.predict.support import build_support

    predictor = load_predictor(model, device)
    s = build_support(predictor, folder)
    s.save(out)
    shots = ", ".join(f"{c} {n}" for c, n in s.shots().items())
    click.echo(f"{out}: {s.way} classes, {len(s.clips)} clips ({shots}); features "
               f"{tuple(s.features.shape[1:])} per clip; model {predictor.fingerprint[:12]}")
