"""The example plugin package (examples/mkd-edge-modality), installed for real.

It is pip-installed into a temporary --target folder (never into the shared venv) and
found through its ``mkd`` entry point by importlib.metadata; then ``mkd plugins`` lists
it, its images pass :func:`mkdcore.testing.check_modality`, and the package's own tests
(written with :mod:`mkdcore.testing`, as a plugin author would) pass under pytest,
including a teacher trained on its images by the pipeline's stages.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mkdcore import plugins as plugin_module

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mkd-edge-modality"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps --target`` of a copy of the example (no build files left in the repo)."""
    work = tmp_path_factory.mktemp("edge")
    src = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("mkd_edge_modality", None)


@pytest.fixture
def manager(installed):
    """A fresh plugin manager that discovers entry points with the example installed."""
    manager = plugin_module.PluginManager()
    previous = plugin_module.set_manager(manager)
    yield manager
    plugin_module.set_manager(previous)


def test_mkd_plugins_lists_it(installed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mkdcore.cli.main", "plugins", "--kind", "modality", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    import json

    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["edge"]["package"] == "mkd-edge-modality" and rows["edge"]["version"] == "0.1.0"
    assert "method='sobel'" in rows["edge"]["options_summary"]


def test_images_pass_the_kit_check(manager, tmp_path):
    from mkdcore import api, testing

    assert api.get("modality", "edge").package == "mkd-edge-modality"
    root = testing.tiny_dataset(tmp_path)
    summary = testing.check_modality("edge", root, {"method": "sobel"})
    assert summary.ok and summary.derived == 6


class Outcomes:
    """A pytest plugin that keeps each test's outcome (the inner run's verdicts)."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.append(f"{report.nodeid} ({report.when}): {report.longreprtext[-2000:]}")
        elif report.passed and report.when == "call":
            self.passed.append(report.nodeid)


@pytest.mark.slow
def test_the_packages_own_tests_pass(installed, manager, tmp_path):
    """What the plugin's author runs (``pytest`` in the package, with its pyproject's
    settings), against the install. In this process, through a fresh plugin manager that
    finds the package by its entry point (as ``mkd`` does): a second interpreter would only
    import torch and mkd again (~3.5 s of CPU)."""
    src = installed.parent / "src"
    outcomes, path_before = Outcomes(), list(sys.path)
    try:
        code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(src), "-c", str(src / "pyproject.toml"),
                            "--basetemp", str(tmp_path / "basetemp"), str(src / "tests")], plugins=[outcomes])
    finally:  # the package's test modules (imported with its tests folder on sys.path) go again
        sys.path[:] = path_before
        for name in [n for n, m in sys.modules.items() if str(src) in str(getattr(m, "__file__", None))]:
            del sys.modules[name]
    assert code == 0 and not outcomes.failed, outcomes.failed
    assert len(outcomes.passed) == 4, outcomes.passed
