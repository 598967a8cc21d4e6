"""Built-in plugin ``dataset_synthetic``: the procedurally rendered action dataset.

The factory renders into ``root`` when the dataset is missing or incomplete (a killed
render is finished, not restarted) and returns the root, so a config that names
``synthetic`` works on a fresh checkout with nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path = Field(Path("data/synth"), description="dataset root (rendered here when missing)")
    classes: int = Field(20, ge=3, description="action classes (the first C of the renderer's actions)")
    videos_per_class: int = Field(10, ge=1)
    size: int = Field(112, ge=16, le=1024, description="frame side (px)")
    seed: int = Field(0, ge=0, description="same seed, byte-identical files")


def synthetic_dataset(
    root: Path = Path("data/synth"), classes: int = 20, videos_per_class: int = 10, size: int = 112, seed: int = 0
) -> Path:
    """Stick-figure actions (rgb, depth, skeleton) rendered on demand; returns the root."""
    from mkdcore.data.synth import SynthParams, dataset_complete, render_dataset

    params = SynthParams(classes, videos_per_class, size, seed)
    params.validate()
    if dataset_complete(root, params):
        return Path(root)
    return render_dataset(root, classes, videos_per_class, size, seed)


@hookimpl
def register_datasets(register):
    register(
        "synthetic",
        synthetic_dataset,
        options=SyntheticOptions,
        description="Procedurally rendered stick-figure actions (rgb/depth/skeleton), rendered on demand",
    )
