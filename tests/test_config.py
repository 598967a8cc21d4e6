"""Configs: YAML loading, overrides, one-line errors with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mkdcore.cli.main import cli, main
from mkdcore.config import ExperimentConfig, apply_overrides, load_config
from mkdcore.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_paper_recipe():
    cfg = ExperimentConfig()
    assert cfg.episodes.way == 5 and cfg.episodes.shot == 5
    assert cfg.training.lr == 1e-4 and cfg.training.tasks_per_batch == 16
    assert cfg.fusion.training.lr == 2e-5
    assert cfg.modalities.names[0] == "rgb"


def test_overrides_are_yaml_typed():
    data = apply_overrides({}, ["training.lr=0.5", "episodes.way=3", "modalities.names=[rgb, flow]"])
    assert data == {"training": {"lr": 0.5}, "episodes": {"way": 3}, "modalities": {"names": ["rgb", "flow"]}}


def test_unknown_key_names_file_and_full_path(tmp_path):
    p = write(tmp_path, "training:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, check_plugins=False)
    msg = str(exc.value)
    assert str(p) in msg and "training.lrr" in msg and "unknown key" in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "episodes:\n  way: many\n")
    with pytest.raises(ConfigError, match=r"episodes\.way"):
        load_config(p, check_plugins=False)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_key(tmp_path):
    p = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=r"runtime\.devic"):
        load_config(p, ["runtime.devic=cpu"], check_plugins=False)


def test_rgb_must_be_first(tmp_path):
    p = write(tmp_path, "modalities:\n  names: [flow, rgb]\n")
    with pytest.raises(ConfigError, match="modalities.names"):
        load_config(p, check_plugins=False)


@pytest.mark.parametrize(
    "text,needle",
    [("training:\n  lrr: 0.1\n", "training.lrr"), ("episodes:\n  way: x\n", "episodes.way"), ("a: [\n", "invalid YAML")],
)
def test_cli_config_show_bad_yaml_is_one_line(tmp_path, text, needle, capsys):
    p = write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        main(["config", "show", str(p)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and str(p) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_config_show_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "show", str(tmp_path / "missing.yaml")])
    assert exc.value.code != 0
    assert "missing.yaml: no such config file" in capsys.readouterr().err


def test_cli_config_show_resolves_overrides(tmp_path, plugin_manager):
    p = write(tmp_path, "name: demo\n")
    result = CliRunner().invoke(cli, ["config", "show", str(p), "--set", "training.lr=0.01", "--set", "name=other"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "lr: 0.01" in result.output and "name: other" in result.output


def test_cli_config_schema():
    import json

    result = CliRunner().invoke(cli, ["config", "schema"])
    schema = json.loads(result.output)
    assert "training" in schema["properties"]


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "mkd" in result.output
