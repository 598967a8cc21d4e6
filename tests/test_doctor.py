"""``mkd doctor`` names installed packages that depend on lite-mkd but register nothing in
the ``mkd`` entry-point group (a misspelt ``[project.entry-points.mdk]`` hides a plugin)."""

from __future__ import annotations

import json
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

from mkdcore.cli import doctor_cmd


def fake_dist(tmp_path: Path, name: str, requires: list[str], entry_points: str = "") -> PathDistribution:
    """An installed distribution as pip leaves it: a ``.dist-info`` folder."""
    info = tmp_path / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 0.1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    return PathDistribution(info)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    dists = [
        fake_dist(tmp_path, "mkd-typo", ["lite-mkd>=0.1", "numpy"], "[mdk]\nedge = mkd_typo\n"),
        fake_dist(tmp_path, "mkd-bare", ["Lite_MKD"]),
        fake_dist(tmp_path, "mkd-good", ["lite-mkd"], "[mkd]\ngood = mkd_good\n"),
        fake_dist(tmp_path, "uses-numpy", ["numpy"], "[console_scripts]\nx = y:z\n"),
        fake_dist(tmp_path, "optional-mkd", ['lite-mkd; extra == "mkd"']),
        fake_dist(tmp_path, "lite-mkd", ["torch"], "[mkd]\nheads_trx = plugins.heads_trx\n"),
    ]
    monkeypatch.setattr(doctor_cmd, "distributions", lambda: dists)
    return dists


def test_lists_packages_that_register_nothing(installed):
    assert doctor_cmd.silent_plugin_packages() == [
        "mkd-typo 0.1.0 (its entry points are in 'mdk')",
        "mkd-bare 0.1.0 (it has no entry points)",
    ]


def test_doctor_warns_with_the_group_name(installed, plugin_manager, capsys):
    from mkdcore.cli.main import main

    with pytest.raises(SystemExit):
        main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    check = next(c for c in report["checks"] if c["check"] == "packages")
    assert not check["ok"] and "mkd-typo 0.1.0" in check["detail"] and "'mdk'" in check["detail"]
    assert "[project.entry-points.mkd]" in check["detail"] and "mkd-good" not in check["detail"]
    with pytest.raises(SystemExit):
        main(["doctor"])
    line = next(l for l in capsys.readouterr().out.splitlines() if "packages" in l)
    assert line.startswith("[warn] packages") and "mkd-bare" in line  # a warning: not every dependant is a plugin
