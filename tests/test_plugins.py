"""The plugin system: registration, creation by name, errors, listing."""

from __future__ import annotations

import json
import types

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from mkdcore import api
from mkdcore.cli.main import cli
from mkdcore.errors import PluginError
from mkdcore.hookspecs import hookimpl
from mkdcore.plugins import PluginManager


def test_throwaway_plugin_is_created_by_name(plugin_manager):
    obj = api.create("head", "throwaway", scale=2.5)
    assert obj.scale == 2.5
    assert any(s.name == "throwaway" and s.package == "tests" for s in api.list_plugins("head"))


def test_plugin_defined_in_test_without_entry_point(plugin_manager):
    class EdgeOptions(BaseModel):
        model_config = {"extra": "forbid"}
        threshold: float = 0.1

    class Edge:
        def __init__(self, threshold: float) -> None:
            self.threshold = threshold

    mod = types.ModuleType("edge_plugin")

    @hookimpl
    def register_modalities(register):
        register("edge", Edge, options=EdgeOptions, description="edges")

    mod.register_modalities = register_modalities
    plugin_manager.register(mod, name="edge", package="edge-pkg", version="1.0")
    edge = api.create("modality", "edge", threshold=0.3)
    assert edge.threshold == 0.3
    spec = api.get("modality", "edge")
    assert (spec.package, spec.version, spec.description) == ("edge-pkg", "1.0", "edges")


def test_unknown_name_lists_registered_names(plugin_manager):
    with pytest.raises(PluginError) as exc:
        api.create("head", "nope")
    msg = str(exc.value)
    assert "unknown head 'nope'" in msg and "throwaway" in msg and "\n" not in msg


def test_bad_option_names_the_option(plugin_manager):
    with pytest.raises(PluginError, match="scal"):
        api.create("head", "throwaway", scal=1)
    with pytest.raises(PluginError, match="scale"):
        api.create("head", "throwaway", scale="big")


def test_duplicate_names_fail_naming_both_packages():
    pm = PluginManager(load_entrypoints=False)
    for pkg in ("pkg-a", "pkg-b"):
        mod = types.ModuleType(pkg)

        @hookimpl
        def register_heads(register):
            register("same", object)

        mod.register_heads = register_heads
        pm.register(mod, name=pkg, package=pkg)
    with pytest.raises(PluginError) as exc:
        pm.registry
    assert "pkg-a" in str(exc.value) and "pkg-b" in str(exc.value)


def test_hookimpl_without_spec_fails_fast():
    pm = PluginManager(load_entrypoints=False)
    mod = types.ModuleType("typo")

    @hookimpl
    def register_headz(register):  # typo: no such hook
        pass

    mod.register_headz = register_headz
    with pytest.raises(Exception, match="register_headz"):
        pm.register(mod, name="typo")


def test_wildcard_registration_receives_variant():
    pm = PluginManager(load_entrypoints=False)

    class Opt(BaseModel):
        model_config = {"extra": "forbid"}
        variant: str = ""

    mod = types.ModuleType("wild")

    @hookimpl
    def register_backbones(register):
        register("timm:*", lambda variant: ("built", variant), options=Opt)

    mod.register_backbones = register_backbones
    pm.register(mod, name="wild")
    assert pm.registry.create("backbone", "timm:convnext_tiny") == ("built", "convnext_tiny")


def test_load_plugins_env_limits_entry_points(monkeypatch):
    monkeypatch.setenv("MKD_LOAD_PLUGINS", "")
    pm = PluginManager()
    assert pm.list_plugins() == []


def test_trace_plugins_env(monkeypatch, capsys):
    monkeypatch.setenv("MKD_TRACE_PLUGINS", "1")
    pm = PluginManager(load_entrypoints=False)
    mod = types.ModuleType("traced")

    @hookimpl
    def register_heads(register):
        register("traced", object)

    mod.register_heads = register_heads
    pm.register(mod, name="traced")
    pm.registry
    assert "mkd: register_heads -> traced" in capsys.readouterr().err


def test_cli_plugins_json_lists_builtins(plugin_manager):
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    kinds = {(d["kind"], d["name"]) for d in data}
    assert ("head", "throwaway") in kinds
    assert all({"name", "kind", "package", "version"} <= set(d) for d in data)


def test_cli_plugins_kind_filter(plugin_manager):
    result = CliRunner().invoke(cli, ["plugins", "--kind", "head", "--json"])
    assert result.exit_code == 0
    assert {d["kind"] for d in json.loads(result.output)} == {"head"}
