"""The public Python API: build components by name, list what is registered.

>>> from mkdcore import api
>>> head = api.create("head", "trx", in_dim=256, out_dim=128, temporal_set=[2])
"""

from __future__ import annotations

from typing import Any

from mkdcore.plugins import get_manager
from mkdcore.registry import PluginSpec


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
