"""``mkd profile CONFIG``: parameters and cost of one test episode of the config's student."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mkdcore.cli.options import config_overrides


@click.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@config_overrides
@click.option("--baseline", is_flag=True, help="Profile the no-distillation student (the baseline variant).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys params, gmacs, gflops, ...).")
def profile(config_file: Path, overrides: tuple[str, ...], baseline: bool, as_json: bool) -> None:
    """Parameters, GMACs (thop rules, the paper's "GFLOPs") and GFLOPs (torch FlopCounterMode)
    of one test episode: way x shot support + way x query_test query clips of data.frames
    frames at data.crop px. Counted on the meta device: no memory, no weights, seconds."""
    import torch

    from mkdcore.config import load_config
    from mkdcore.errors import ConfigError
    from mkdcore.models.build import build, student_spec
    from mkdcore.models.profile import profile_episode

    cfg = load_config(config_file, overrides)
    variant = "baseline" if baseline else "lite-mkd"
    if baseline and cfg.distillation.baseline is None:
        raise ConfigError(f"{config_file}: --baseline, but distillation.baseline is null (no baseline student)")
    # the very builder the student stage trains with; weights do not change costs (no pretrained file)
    with torch.device("meta"):
        model, _ = build(student_spec(cfg, variant))
    ep = cfg.episodes
    result = profile_episode(model, ep.way, ep.shot, ep.query_test, cfg.data.frames, cfg.data.crop)
    result = {"config": str(config_file), "student": f"{cfg.student.backbone.name} + {cfg.student.head.name}", **result}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['student']}  ({result['episode']})")
    click.echo(f"  params  {result['params'] / 1e6:10.3f} M")
    click.echo(f"  GMACs   {result['gmacs']:10.2f}   (thop rules: conv + linear + norm multiply-adds; the paper's 'GFLOPs')")
    click.echo(f"  GFLOPs  {result['gflops']:10.2f}   (torch FlopCounterMode, 2 per multiply-add, all matmuls)")
