"""``mkd eval MODEL --episodes FILE``: score a trained model on frozen test episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import click

from mkdcore.config import RuntimeConfig, Section, TrainingConfig


def _setting(section: type[Section], name: str) -> tuple[tuple[Any, ...], Any]:
    """The choices and default of a config setting (one source: mkdcore/config.py)."""
    field = section.model_fields[name]
    return get_args(field.annotation), field.default


AMP_CHOICES, AMP_DEFAULT = _setting(TrainingConfig, "amp")
DECODE_CHOICES, DECODE_DEFAULT = _setting(RuntimeConfig, "decode")


@click.command("eval")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--episodes", "episodes_file", type=click.Path(path_type=Path), required=True, help="Frozen episodes (mkd data episodes).")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root (default: the one the model was trained on).")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", type=click.Choice(AMP_CHOICES), default=None,
              help="Autocast while extracting features (default: the setting the evaluate stage used, from the "
                   "model card; else auto, as a config's training.amp).")
@click.option("--decode", type=click.Choice(DECODE_CHOICES), default=None,
              help="Where frames are decoded (default: the evaluate stage's setting from the card; else auto).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(model_dir: Path, episodes_file: Path, root: Path | None, device: str, amp: str | None, decode: str | None,
             as_json: bool) -> None:
    """Evaluate MODEL_DIR (a stage directory or its model/ folder holding model.json
    and model.pt) on the episodes of FILE: accuracy with 95% CI, per-class accuracy.

    Autocast and frame decoding follow what the pipeline's evaluate stage used (recorded in
    the model card), so that the same episodes give the stage's numbers; ``--amp`` and
    ``--decode`` override them."""
    from mkdcore.data.episodes import load_episodes
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.transforms import ClipTransform
    from mkdcore.device import resolve_device
    from mkdcore.errors import ConfigError
    from mkdcore.fileio import CorruptFileError, first_line
    from mkdcore.models.folder import MODEL_SPEC, load_model, model_dir_of, read_card, redo_remedy
    from mkdcore.stages.scoring import score_on_frames
    from mkdcore.stages.stage_dir import StageDir

    found = model_dir_of(model_dir)
    if found is None:
        raise ConfigError(f"{model_dir}: no {MODEL_SPEC} here (pass a teacher/student stage directory or its model/ folder)")
    model_dir = found
    dev = resolve_device(device)
    model, spec = load_model(model_dir, dev)
    if spec["type"] != "fewshot":
        raise ConfigError(f"{model_dir}: a {spec['type']} model reads stored features; evaluate it with `mkd run` (evaluate stage)")
    episodes, meta = load_episodes(episodes_file)
    try:
        d = spec["data"]
        layout = DatasetLayout(root or d["root"])
        transform = ClipTransform(resize=d["resize"], crop=d["crop"], train=False, normalize=d["normalize"])
        frames = int(d["frames"])
        modality = spec["modality"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"model spec {model_dir / MODEL_SPEC} is corrupt (its data section: {first_line(exc)}); "
                               f"{redo_remedy(StageDir.containing(model_dir))}") from None
    evaluated = read_card(model_dir)["evaluation"] or {}
    amp = amp or evaluated.get("amp", AMP_DEFAULT)  # cards written before the settings were recorded lack them
    decode = decode or evaluated.get("decode", DECODE_DEFAULT)
    summary = score_on_frames(model, episodes, layout, modality, transform, frames, dev, amp=amp, decode=decode).summary()
    summary.pop("confusion")
    if as_json:
        click.echo(json.dumps({"model": str(model_dir), "episodes_file": str(episodes_file), "amp": amp, "decode": decode,
                               **summary}, indent=2))
        return
    click.echo(f"{model_dir}: {summary['accuracy']:.2f} ± {summary['ci95']:.2f} % over {summary['episodes']} episodes")
    for cls, acc in summary["per_class_accuracy"].items():
        click.echo(f"  {cls:30s} {acc:6.2f} %")
