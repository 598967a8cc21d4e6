"""Built-in plugin `dataset_standard`: the five standard few-shot action benchmarks.

Each dataset names a root holding the frames in the seed layout (``mkd data import``
writes it from raw videos) and uses the split files shipped in ``mkdcore/splits``.
The factory checks the root and copies the shipped split folder into
``<root>/splits/<split>/`` when it is absent, so the root is self-describing.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mkdcore.hookspecs import hookimpl

#: dataset name -> (shipped split folder, default root, description)
STANDARD: dict[str, tuple[str, str, str]] = {
    "ucf101": ("ucf_ARN", "data/ucf101", "UCF101 with the ARN few-shot split (70/10/21 classes)"),
    "hmdb51": ("hmdb_ARN", "data/hmdb51", "HMDB51 with the ARN few-shot split (31/10/10 classes)"),
    "kinetics100": ("kinetics_CMN", "data/kinetics100", "Kinetics-100 with the CMN split (64/12/24 classes)"),
    "ssv2_small": ("ssv2_CMN", "data/ssv2_small", "Something-Something v2 small, CMN split (64/12/24 classes)"),
    "ssv2_full": ("ssv2_OTAM", "data/ssv2_full", "Something-Something v2 full, OTAM split 07 (64/12/24 classes)"),
}


def _options_model(default_root: str) -> type[BaseModel]:
    class StandardDatasetOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        root: str = default_root

    return StandardDatasetOptions


def prepare_standard(root: str, split: str) -> Path:
    """Check ``root`` has RGB frames; install the shipped ``split`` folder if missing."""
    from mkdcore.data.layout import SHIPPED_SPLITS_DIR, DatasetLayout

    layout = DatasetLayout(root)
    layout.rgb_dir  # noqa: B018  (one-line DataError naming the root when it is wrong)
    target = layout.root / "splits" / split
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{split}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(SHIPPED_SPLITS_DIR / split, tmp)
        tmp.rename(target)
    return layout.root


@hookimpl
def register_datasets(register):
    for name, (split, default_root, description) in STANDARD.items():
        register(name, partial(prepare_standard, split=split), options=_options_model(default_root), description=description)
