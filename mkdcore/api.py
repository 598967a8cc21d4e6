"""The public Python API: build components by name, list what is registered.

>>> from mkdcore import api
>>> head = api.create("head", "trx", in_dim=256, out_dim=128, temporal_set=[2])
>>> student = api.load_model("runs/stages/student/<key>/model")   # a saved model folder
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdcore.plugins import get_manager
from mkdcore.registry import PluginSpec

if TYPE_CHECKING:
    from mkdcore.models.loaded import LoadedModel


def create(kind: str, name: str, **options: Any) -> Any:
    """Build the ``kind`` component called ``name``.

    ``options`` are validated by the plugin's own pydantic model; an unknown name or a
    bad option raises :class:`mkdcore.errors.PluginError` with a one-line message
    (the registered names of that kind, or the offending option).
    """
    return get_manager().registry.create(kind, name, **options)


def get(kind: str, name: str) -> PluginSpec:
    """The registration record of one component."""
    return get_manager().registry.get(kind, name)


def list_plugins(kind: str | None = None) -> list[PluginSpec]:
    """Every registered component (of one kind, if given), sorted by kind and name."""
    return get_manager().list_plugins(kind)


def names(kind: str) -> list[str]:
    """The registered names of one kind."""
    return get_manager().registry.names(kind)


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """The model of a model folder (or of a stage folder holding ``model/``), rebuilt
    from its card with no experiment config: ``.model`` (eval mode), ``.card``,
    ``.spec``, and ``.encode(clips)`` / ``.head(support, labels, queries)``.

    A folder without a card, a card from a newer mkd, a component whose plugin is not
    installed, or weights that do not fit, raise an :class:`mkdcore.errors.MkdError`
    with one line naming what is missing."""
    from mkdcore.models.folder import load_folder, model_dir_of
    from mkdcore.models.loaded import LoadedModel

    folder = model_dir_of(Path(path)) or Path(path)
    model, card = load_folder(folder, device)
    return LoadedModel(model=model, card=card, path=folder)
