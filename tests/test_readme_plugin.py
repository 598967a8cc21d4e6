"""The README's plugin example works as written: installed for real (entry point),
listed, and used through the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    python = re.search(r"```python\n(# mkd_l2/__init__.py\n.*?)```", text, re.S).group(1)
    toml = re.search(r"```toml\n(# pyproject.toml\n.*?)```", text, re.S).group(1)
    return python, toml


@pytest.mark.slow
def test_readme_plugin_installs_and_works(tmp_path, monkeypatch):
    python, toml = readme_blocks()
    pkg = tmp_path / "src"
    (pkg / "mkd_l2").mkdir(parents=True)
    (pkg / "mkd_l2" / "__init__.py").write_text(python)
    (pkg / "pyproject.toml").write_text(toml)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(pkg)],
                   check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    from mkdcore.plugins import PluginManager, set_manager

    manager = PluginManager()
    previous = set_manager(manager)
    try:
        from mkdcore import api

        spec = api.get("distiller", "l2_logits")
        assert spec.package == "mkd-l2" and spec.version == "0.1.0"
        distiller = api.create("distiller", "l2_logits", weight=0.5)
        logits = torch.randn(4, 3, requires_grad=True)
        terms = distiller({"logits": logits}, {"logits": torch.randn(4, 3)}, torch.tensor([0, 1, 2, 0]))
        terms["total"].backward()
        assert logits.grad is not None and set(terms) == {"ce", "l2", "total"}
    finally:
        set_manager(previous)
