"""``mkd predict MODEL --support DIR|support.npz QUERY...``: rank the support classes
for new clips with a trained few-shot model."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("queries", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--support", "support_path", required=True, type=click.Path(path_type=Path),
              help="Labelled examples: a folder with one sub-folder per class (video files or frame folders), "
                   "or a support.npz from `mkd support build`.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes shown per query.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query per line: {\"query\", \"top\": [{\"class\", \"score\"}]}.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (eager models).")
def predict(model: Path, queries: tuple[Path, ...], support_path: Path, top_k: int, as_json: bool, device: str) -> None:
    """Which of the support classes is in each QUERY (a video file or a frame folder)?

    MODEL is a trained student (its stage folder or model/ folder) or an ONNX export of
    one. Clips are sampled as the data pipeline samples test clips (the model's frame
    count, resize, centre crop and normalisation). Scores are the softmax over the
    few-shot logits of the support classes."""
    from mkdcore.predict.model import load_predictor
    from mkdcore.predict.predict import predict as run
    from mkdcore.predict.support import build_support, load_support

    predictor = load_predictor(model, device)
    if support_path.is_dir():
        support = build_support(predictor, support_path)
    else:
        support = load_support(support_path)
        support.check_model(predictor, support_path)
    for p in run(predictor, support, queries, top_k):
        if as_json:
            click.echo(json.dumps(p.as_json()))
            continue
        click.echo(str(p.query))
        width = max(len(c) for c, _ in p.top)
        for i, (cls, score) in enumerate(p.top, 1):
            click.echo(f"  {i}. {cls:{width}s}  {score:.4f}")
