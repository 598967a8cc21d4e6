"""The MFM teacher's loss is the spec's (section 4.3): cross-entropy SUMMED over the
queries of a task, divided by tasks_per_batch. Checked against the formula written out
here with ``log_softmax``, on episodes with several queries so that a mean would fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mkdcore.config import load_config
from mkdcore.data import VideoKey
from mkdcore.data.episodes import EpisodeSampler
from mkdcore.data.features import FeatureStore
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.splits import load_split
from mkdcore.stages import fuse
from mkdcore.stages.base import StageContext
from mkdcore.stages.dag import plan

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def spec_loss(logits: torch.Tensor, labels: torch.Tensor, tasks_per_batch: int) -> float:
    """Spec 4.3, independently of fuse.py: sum_q -log softmax(logits_q)[y_q] / tasks_per_batch."""
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return float(-log_p[torch.arange(len(labels)), labels].sum() / tasks_per_batch)


def crafted_logits(nq: int, way: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(nq, way, generator=g) * 3).requires_grad_(True)


def test_mfm_task_loss_sums_over_queries():
    logits = crafted_logits(6, 3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    loss, ce = fuse.mfm_task_loss(logits, labels, 4)
    expected = spec_loss(logits.detach(), labels, 4)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert ce == pytest.approx(expected * 4, rel=1e-6)  # logged "ce": per-task summed, undivided
    assert float(F.cross_entropy(logits.detach(), labels) / 4) != pytest.approx(expected, rel=1e-3)  # the mean is not it
    loss.backward()  # a real graph: the engine backpropagates it
    assert logits.grad is not None


class _Capture(Exception):
    """Stops ``fuse.run`` once the engine is built, carrying its step function."""


class _CapturingTrainer:
    def __init__(self, model, cfg, stage_dir, device, step_fn, *args, **kwargs) -> None:
        self.step_fn = step_fn

    def train(self):
        raise _Capture(self.step_fn)


class _FixedLogits(torch.nn.Module):
    """A stand-in MFM teacher whose logits are known to the test."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits.detach().clone())

    def forward(self, support, labels, query, way=None):
        assert next(iter(query.values())).shape[0] == self.logits.shape[0]
        return {"logits": self.logits}


def tiny_feature_run(tmp_path: Path, classes: int = 4, videos: int = 4, frames: int = 4, dim: int = 8):
    """A dataset of empty video folders plus random stored teacher features: all the
    ``fuse`` stage reads."""
    root = tmp_path / "data"
    lines = []
    for c in range(classes):
        for v in range(videos):
            (root / "rgb_l8" / f"class{c}" / f"v{v}").mkdir(parents=True)
            lines.append(f"class{c}/v{v}")
    split_dir = root / "splits" / "tiny"
    split_dir.mkdir(parents=True)
    for which in ("train", "val", "test"):
        (split_dir / f"{which}list03.txt").write_text("\n".join(lines) + "\n")
    cfg = load_config(SMOKE, [f"data.root={root}", "data.split=tiny", f"runtime.runs_dir={tmp_path / 'runs'}",
                              "fusion.query_train=3", "fusion.training.tasks_per_batch=4", f"data.frames={frames}"])
    nodes = {n.name: n for n in plan(cfg)}
    rng = np.random.default_rng(0)
    for m in cfg.modalities.names:
        store = FeatureStore(nodes[f"features:{m}"].stage_dir / "features")
        for line in lines:
            c, v = line.split("/")
            store.save(VideoKey(c, v), rng.standard_normal((frames, dim)).astype(np.float32))
    return cfg, nodes


def test_fuse_step_uses_the_summed_loss(tmp_path, monkeypatch):
    cfg, nodes = tiny_feature_run(tmp_path)
    monkeypatch.setattr(fuse, "EpisodicTrainer", _CapturingTrainer)
    ctx = StageContext(cfg=cfg, node=nodes["fuse"], nodes=nodes, device=torch.device("cpu"))
    with pytest.raises(_Capture) as caught:
        fuse.run(ctx)
    step = caught.value.args[0]

    f = cfg.fusion
    sampler = EpisodeSampler(load_split(DatasetLayout(cfg.data.root), "tiny", "train"), cfg.episodes.way,
                             cfg.episodes.shot, f.query_train, seed=f.training.seed)
    episode = sampler.episode(0)
    labels = torch.tensor(episode.query_labels)
    assert len(labels) == 9  # 3-way, 3 queries per class: mean and sum differ by 9x
    model = _FixedLogits(crafted_logits(len(labels), cfg.episodes.way))

    out = step(0, model)
    expected = spec_loss(model.logits.detach(), labels, f.training.tasks_per_batch)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert out.terms["ce"] == pytest.approx(expected * f.training.tasks_per_batch, rel=1e-6)
    assert out.total == 9
    assert out.correct == int((model.logits.argmax(1) == labels).sum())
