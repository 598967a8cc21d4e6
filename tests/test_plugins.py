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
from mkdcore.testing import run_cli


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


# ------------------------------------------------------------ broken plugins (issue 10)
class _Dist:
    name, version = "mkd-broken-pkg", "0.1"


class BrokenEntryPoint:
    """An ``mkd`` entry point whose module fails to import."""

    name, dist = "broken_heads", _Dist()
    loads = 0

    def load(self):
        type(self).loads += 1
        raise ImportError("No module named 'nonexistent_dep'\n(second line)")


@pytest.fixture
def broken_entry_point(monkeypatch):
    """The real ``mkd`` entry points plus a broken one, read by a fresh process-wide
    manager (as a new ``mkd`` process would)."""
    from mkdcore import plugins as plugin_module

    real = plugin_module.entry_points
    monkeypatch.setattr(plugin_module, "entry_points", lambda group: [*real(group=group), BrokenEntryPoint()])
    BrokenEntryPoint.loads = 0
    previous = plugin_module.set_manager(None)
    yield BrokenEntryPoint
    plugin_module.set_manager(previous)


def test_broken_plugin_is_skipped_with_one_warning(broken_entry_point, capsys):
    code, out, err = run_cli("plugins", "--json")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and err.strip() == warnings[0], err
    assert "'broken_heads'" in err and "mkd-broken-pkg" in err and "nonexistent_dep" in err
    rows = json.loads(out)
    assert ("head", "trx") in {(r["kind"], r["name"]) for r in rows}  # the others still load
    broken = [r for r in rows if r["broken"]]
    assert [(b["name"], b["package"]) for b in broken] == [("broken_heads", "mkd-broken-pkg")]
    assert "ImportError: No module named 'nonexistent_dep' (second line)" == broken[0]["error"]


def test_broken_plugin_shown_in_table_and_failed_by_doctor(broken_entry_point, capsys):
    code, out, _ = run_cli("plugins", "--kind", "head")
    assert code == 0 and "broken_heads" in out and "nonexistent_dep" in out
    code, out, _ = run_cli("doctor", "--json")
    report = json.loads(out)
    check = next(c for c in report["checks"] if c["check"] == "plugins")
    assert code == 1 and not report["ok"] and not check["ok"]
    assert "broken_heads" in check["detail"] and "nonexistent_dep" in check["detail"]
    assert broken_entry_point.loads == 1  # one manager per process: imported (and warned) once


def test_config_needing_a_broken_plugin_fails_with_one_line_naming_it(broken_entry_point, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text("student:\n  head: {name: fancy_head}\n")
    code, _, err = run_cli("run", str(config))
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "student.head.name" in lines[0] and "'fancy_head'" in lines[0]
    assert "broken_heads" in lines[0] and "nonexistent_dep" in lines[0]
    assert list(tmp_path.iterdir()) == [config]


def test_disable_plugins_env_skips_named_entry_points(broken_entry_point, monkeypatch, capsys):
    monkeypatch.setenv("MKD_DISABLE_PLUGINS", "broken_heads, heads_trx")
    pm = PluginManager()
    assert broken_entry_point.loads == 0 and not pm.broken and "warning" not in capsys.readouterr().err
    assert sorted(pm.disabled) == ["broken_heads", "heads_trx"]
    assert "trx" not in pm.registry.names("head") and "mean_distance" in pm.registry.names("head")
    with pytest.raises(PluginError, match="disabled by MKD_DISABLE_PLUGINS: .*heads_trx"):
        pm.registry.get("head", "trx")


def test_plugin_whose_hook_raises_is_skipped():
    pm = PluginManager(load_entrypoints=False)
    mod = types.ModuleType("half")

    @hookimpl
    def register_heads(register):
        register("half_head", object)
        raise RuntimeError("boom")

    mod.register_heads = register_heads
    pm.register(mod, name="half", package="half-pkg")
    assert pm.registry.names("head") == [] and "RuntimeError: boom" in pm.broken["half"].error
    with pytest.raises(PluginError, match="half .package half-pkg: RuntimeError: boom"):
        pm.registry.get("head", "half_head")


# ------------------------------------------------------------------ capabilities
def _distiller_plugin(name: str, **capabilities):
    import torch

    class NoTeacher(torch.nn.Module):
        def forward(self, student, teacher, labels):
            loss = torch.nn.functional.cross_entropy(student["logits"], labels)
            return {"total": loss, "ce": loss}

    mod = types.ModuleType(f"{name}_plugin")

    @hookimpl
    def register_distillers(register):
        register(name, NoTeacher, description="third-party", **capabilities)

    mod.register_distillers = register_distillers
    return mod


def test_a_third_party_distiller_that_needs_no_teacher_gets_no_teacher_stages(plugin_manager):
    """Core asks the component's declared capability, never its name (there was a
    hard-coded {"ce"} in the DAG)."""
    from pathlib import Path

    from mkdcore.config import load_config
    from mkdcore.stages.dag import plan

    plugin_manager.register(_distiller_plugin("plain", needs_teacher=False), name="plain", package="x", version="1")
    smoke = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    names = [n.name for n in plan(load_config(smoke, ["distillation.distiller.name=plain", "distillation.baseline=null"]))]
    assert "student:lite-mkd" in names and not any(n.startswith(("teacher", "fuse", "derive", "mm_")) for n in names)
    with_teacher = [n.name for n in plan(load_config(smoke, []))]
    assert "fuse" in with_teacher
    assert api.get("distiller", "ce").capability("needs_teacher") is False
    assert api.get("distiller", "d2m").capability("needs_teacher") is True  # the default


def test_an_unknown_capability_is_an_error_naming_it(plugin_manager):
    plugin_manager.register(_distiller_plugin("odd", needs_techer=False), name="odd", package="x", version="1")
    with pytest.raises(PluginError, match="needs_techer"):
        api.get("distiller", "odd")


def test_plugin_commands_are_listed_in_help():
    import click

    mod = types.ModuleType("cmd_plugin")

    @hookimpl
    def register_commands(cli):
        @cli.command(name="hello-plugin")
        def hello() -> None:
            """Say hello from a plugin."""
            click.echo("hello")

    mod.register_commands = register_commands
    from mkdcore import plugins as plugin_module
    from mkdcore.cli.main import RootGroup

    manager = PluginManager()
    manager.register(mod, name="cmdplug", package="x", version="1")
    previous = plugin_module.set_manager(manager)
    root = RootGroup(name="mkd", lazy_commands={})
    try:
        ctx = click.Context(root)
        assert "hello-plugin" in root.list_commands(ctx)
        assert "Say hello" in root.get_help(ctx)
    finally:
        plugin_module.set_manager(previous)
