"""``mkd data episodes ROOT``: freeze seeded episodes to a JSON file that evaluation reuses."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--split", "which", type=click.Choice(["train", "val", "test"]), default="test", show_default=True, help="Split part to draw from.")
@click.option("--n", "n", default=10000, show_default=True, help="Number of episodes.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Episode file to write (JSON).")
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=5, show_default=True)
@click.option("--query", default=1, show_default=True, help="Queries per class (1 is the test protocol).")
@click.option("--split-name", default=None, help="Split folder under ROOT/splits (default: the only one).")
@click.option("--split-id", default=None, help="Split file number, e.g. 03 (default: the one found).")
def episodes(root: str, which: str, n: int, seed: int, out: str, way: int, shot: int, query: int, split_name: str | None, split_id: str | None) -> None:
    """Draw N seeded WAY-way SHOT-shot episodes from ROOT and write them to OUT."""
    from mkdcore.data.episodes import EpisodeSampler, save_episodes
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.splits import load_split
    from mkdcore.errors import DataError

    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    layout = DatasetLayout(root)
    split_name = split_name or layout.default_split()
    split_id = layout.resolve_split_id(split_name, split_id)
    index = load_split(layout, split_name, which, split_id)
    sampler = EpisodeSampler(index, way=way, shot=shot, query=query, seed=seed)
    meta = {
        "dataset": Path(root).resolve().name,
        "split_name": split_name,
        "split_id": split_id,
        "split": which,
        "way": way,
        "shot": shot,
        "query": query,
        "seed": seed,
    }
    path = save_episodes(out, sampler.take(n), meta)
    click.echo(f"wrote {n} {way}-way {shot}-shot {query}-query {which} episodes (seed {seed}) to {path}")
