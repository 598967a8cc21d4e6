"""Shared by the expert-network tests (FlowNet2, AdaBins): the fact-sheet manifests and small helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mkdcore.testing import random_weights

#: the fact-sheet manifests, copied from ``shared/fixtures/expert-networks`` so the tests run
#: (and cannot skip) in a clean clone, where ``../shared`` does not exist
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "expert-networks"


def needs_fixtures(test):
    """Marks a test that reads the manifests (kept for readability: they ship with the tests)."""
    return test


def manifest(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def randomised(net: torch.nn.Module) -> torch.nn.Module:
    """A meta-built module on CPU with small random weights (faster than its own initialisers)."""
    return random_weights(net, "cpu", std=0.05)


def one_video(root: Path) -> Path:
    """Keep one video of a tiny dataset (the network is the slow part, not the runner)."""
    for folder in root.glob("*_l8"):
        for cls in sorted(p for p in folder.iterdir() if p.is_dir())[1:]:
            shutil.rmtree(cls)
    return root
