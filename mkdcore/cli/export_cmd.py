"""``mkd export MODEL --format onnx|torchscript|exported-program -o OUT``: the frame
encoder and the few-shot head of a trained model as deployable graphs plus its card
(see :mod:`mkdcore.export.writer` for the folder and its input contract)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "exported-program"]), default="onnx", show_default=True)
@click.option("--way", type=int, default=5, show_default=True, help="Classes of the few-shot head (static in the graph).")
@click.option("--shot", type=int, default=5, show_default=True, help="Examples per class the head is traced with (the graph accepts any).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (replaced whole).")
def export(model_dir: Path, fmt: str, way: int, shot: int, out: Path) -> None:
    """Export MODEL_DIR (a model folder or the stage folder holding model/) to OUT."""
    from mkdcore import api
    from mkdcore.export.writer import export_model

    card = export_model(api.load_model(model_dir), fmt, way, shot, out)
    e = card["export"]
    click.echo(f"wrote {out}: {e['files']['encoder']} (clips {e['inputs']['encoder']['clips']['shape']} -> features "
               f"{e['outputs']['encoder']['features']['shape']}), {e['files']['head']} (way {way}), model.json")
