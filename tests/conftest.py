"""Shared fixtures: an isolated plugin manager per test, offline hubs, tmp runs."""

from __future__ import annotations

import os
import types

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread per test process (and, inherited, per `mkd` child): the tensors here
# are tiny, and two xdist workers each running two OpenMP threads on two cores spin against
# each other (measured: the smoke experiment took 2.3x the CPU time under that load). Set
# before anything imports torch; a test that checks thread settings sets its own.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pydantic import BaseModel  # noqa: E402

from mkdcore import plugins as plugin_module  # noqa: E402
from mkdcore.hookspecs import hookimpl  # noqa: E402


class ThrowawayOptions(BaseModel):
    model_config = {"extra": "forbid"}
    scale: float = 1.0


class Throwaway:
    """A component that exists only in the tests."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale


def make_throwaway_plugin() -> types.ModuleType:
    mod = types.ModuleType("mkd_throwaway_plugin")

    @hookimpl
    def register_heads(register):
        register("throwaway", Throwaway, options=ThrowawayOptions)

    mod.register_heads = register_heads
    return mod


@pytest.fixture
def plugin_manager():
    """A fresh manager (entry points loaded) plus a throwaway plugin, swapped in
    as the process-wide manager for the duration of the test."""
    manager = plugin_module.PluginManager()
    manager.register(make_throwaway_plugin(), name="throwaway", package="tests")
    previous = plugin_module.set_manager(manager)
    yield manager
    plugin_module.set_manager(previous)


@pytest.fixture(scope="session")
def smoke_template(tmp_path_factory):
    """One finished smoke experiment per test session (trained once); tests that change
    it take a private copy with ``tests.faults.workspace.fresh(smoke_template)``."""
    from tests.faults.workspace import build_template

    return build_template(tmp_path_factory.mktemp("smoke"))
