"""Test helpers for plugin authors (public, stable; like pytest's ``pytester``).

A modality plugin's tests should show three things, each in a few lines::

    from mkdcore import testing

    def test_edge(tmp_path):
        root = testing.tiny_dataset(tmp_path)                   # 3 classes x 2 videos, 4 frames, 32 px
        testing.check_modality("edge", root, {"method": "canny"})  # the real derive runner + output contract

    def test_edge_trains(tmp_path):
        result = testing.derive_and_train("edge", tmp_path)     # data -> derive:edge -> teacher:edge
        assert result.val_acc is not None

* :func:`tiny_dataset` renders the synthetic action dataset (:mod:`mkdcore.data.synth`),
  with the next original frames (``rgb_next_l8``, ``Clip.next_frames``) unless told not
  to, so flow-like modalities are tested on both paths.
* :func:`check_modality` derives through :func:`mkdcore.data.derive.derive_dataset`,
  exactly as ``mkd data derive`` does, then checks what a loader will rely on: one image
  per RGB frame under the same file name, decodable, 3 channels, the RGB frames' height
  and width, and ``decode`` giving finite float ``(T, C, H, W)``.
* :func:`derive_and_train` runs the pipeline's own stages (``mkd run --stages
  teacher:<m>``: data, derive, teacher) on a tiny config built in code, which proves
  the plugin plugs into an experiment, not only into ``derive``.

A modality may be given by its registered name (installed through the ``mkd`` entry
point, the real thing) or, while it is not packaged yet, as an instance: it is then
registered for the duration of the call only.

Failures raise ``AssertionError`` with a message naming the video and file, so pytest
shows what is wrong with the plugin rather than a traceback inside mkd.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdcore.data import VideoKey
from mkdcore.data.derive import DeriveSummary
from mkdcore.data.layout import DatasetLayout
from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.base import Modality

__all__ = ["tiny_dataset", "check_modality", "derive_and_train", "TrainCheck", "registered_modality", "run_cli"]

#: the smallest synthetic dataset a 2-way episode fits in every split (4/2/2 classes)
TRAIN_CLASSES = 8


def tiny_dataset(
    tmp_path: str | Path,
    classes: int = 3,
    videos: int = 2,
    frames: int = 4,
    size: int = 32,
    next_frames: bool = True,
    seed: int = 0,
) -> Path:
    """Render a tiny synthetic dataset into ``tmp_path/data`` and return its root.

    Stick-figure actions as ``rgb_l8`` (``frames`` frames of ``size`` px per video),
    their ground truth ``depth_l8`` and ``skeleton_l8``, split files, and with
    ``next_frames`` the original frame after each sampled frame (``rgb_next_l8``), which
    the derive runner hands to a modality as ``Clip.next_frames``. Deterministic for a
    seed; takes well under a second at the defaults.
    """
    from mkdcore.data.synth import render_dataset

    return render_dataset(Path(tmp_path) / "data", classes=classes, videos_per_class=videos, size=size,
                          seed=seed, frames=frames, next_frames=next_frames)


class _InlinePlugin:
    """A plugin object registering one ready-made modality instance."""

    def __init__(self, modality: Modality) -> None:
        self.modality = modality

    @hookimpl
    def register_modalities(self, register: Any) -> None:
        register(self.modality.name, lambda: self.modality, description=f"{type(self.modality).__name__} (mkdcore.testing)")


@contextmanager
def registered_modality(modality: str | Modality) -> Iterator[str]:
    """Yield the modality's name, registering an instance in the current plugin manager
    for the duration (a name is used as it is: it must already be registered)."""
    if isinstance(modality, str):
        yield modality
        return
    if not modality.name:
        raise AssertionError(f"{type(modality).__name__}.name is empty: a modality needs a name (its folder is <name>_l8)")
    from mkdcore.plugins import get_manager

    manager = get_manager()
    plugin = manager.register(_InlinePlugin(modality), name=f"mkdcore.testing:{modality.name}", package="mkdcore.testing")
    try:
        yield modality.name
    finally:
        manager.unregister(plugin)


def check_modality(
    modality: str | Modality,
    root: str | Path,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
    workers: int = 1,
) -> DeriveSummary:
    """Derive ``modality`` for every video of ``root`` with the real derive runner and
    check its output contract; returns the :class:`DeriveSummary`.

    ``options`` are the plugin's options (only with a registered name; an instance
    carries its own). Raises ``AssertionError`` naming the first video or file that breaks
    the contract.
    """
    from mkdcore import api
    from mkdcore.data.derive import derive_dataset, list_videos

    if options and not isinstance(modality, str):
        raise AssertionError("options apply to a registered modality name; build the instance with them instead")
    with registered_modality(modality) as name:
        summary = derive_dataset(root, name, options, device=device, workers=workers, progress=False)
        if summary.failures:
            video, why = summary.failures[0]
            raise AssertionError(f"derive {name}: {len(summary.failures)} of {summary.videos} videos failed; first {video}: {why}")
        instance = modality if isinstance(modality, Modality) else api.create("modality", name, **(options or {}))
    layout = DatasetLayout(root)
    for key in list_videos(layout):
        _check_video(layout, name, key, instance)
    return summary


def _check_video(layout: DatasetLayout, name: str, key: VideoKey, modality: Modality) -> None:
    """One video's images against its RGB frames, then through ``modality.decode``."""
    import cv2
    import torch

    from mkdcore.data.video import read_frames

    rgb = layout.frame_paths("rgb", key)
    out_dir = layout.video_dir(name, key)
    got = sorted(p.name for p in layout.frame_paths(name, key))
    if got != [p.name for p in rgb]:
        raise AssertionError(f"{out_dir}: images {got} do not match the RGB frame names {[p.name for p in rgb]}")
    for frame in rgb:
        image = cv2.imread(str(out_dir / frame.name), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise AssertionError(f"{out_dir / frame.name}: cannot be decoded")
        expected = cv2.imread(str(frame), cv2.IMREAD_COLOR).shape
        if image.shape != expected:
            raise AssertionError(f"{out_dir / frame.name}: shape {image.shape}, expected {expected} (RGB frame's H x W, 3 channels)")
    decoded = modality.decode(read_frames([out_dir / p.name for p in rgb]))
    t, h, w = len(rgb), expected[0], expected[1]
    if not (isinstance(decoded, torch.Tensor) and decoded.is_floating_point() and decoded.ndim == 4
            and decoded.shape[0] == t and decoded.shape[2:] == (h, w)):
        raise AssertionError(f"{name}.decode() of {out_dir} gave {getattr(decoded, 'dtype', type(decoded))} "
                             f"{tuple(getattr(decoded, 'shape', ()))}, expected float ({t}, C, {h}, {w})")
    if not torch.isfinite(decoded).all():
        raise AssertionError(f"{name}.decode() of {out_dir} gave non-finite values")


@dataclass
class TrainCheck:
    """What :func:`derive_and_train` ran: the teacher's stage folder and its records."""

    stage_dir: Path
    #: the stage's ``manifest.json`` outputs (``tasks``, ``steps``, ``best_val_acc``...)
    outputs: dict[str, Any]
    #: the stage's ``metrics.jsonl`` records, in order
    metrics: list[dict[str, Any]]
    #: the stage names that ran (finished ones are skipped on a rerun in the same folder)
    ran: list[str]

    @property
    def val_acc(self) -> float | None:
        """The best validation accuracy the teacher reached (None if it never validated)."""
        return self.outputs.get("best_val_acc")


def derive_and_train(
    modality: str | Modality,
    workdir: str | Path,
    options: dict[str, Any] | None = None,
    tasks: int = 2,
    **config: Any,
) -> TrainCheck:
    """Run ``mkd run --stages teacher:<modality>`` on a tiny experiment in ``workdir``.

    The experiment (built in code, see :func:`tiny_experiment`) renders a synthetic
    dataset of 8 classes x 2 videos into ``workdir/data``, derives the modality with
    ``options`` (stage ``derive:<m>``) and trains a small few-shot teacher on its images
    for ``tasks`` 2-way 1-shot episodes, validating once, all on the CPU; runs go to
    ``workdir/runs``. ``config`` overrides top-level sections of the experiment. Checks
    that the teacher trained: finite losses, a validation accuracy, a saved model.
    """
    from mkdcore.fileio import read_json, read_text
    from mkdcore.stages.runner import run_experiment

    with registered_modality(modality) as name:
        cfg = tiny_experiment(name, workdir, options, tasks, **config)
        nodes, ran = run_experiment(cfg, stages=[f"teacher:{name}"], echo=lambda line: None)
    files = nodes[f"teacher:{name}"].files
    manifest = read_json(files.manifest, "teacher stage manifest")
    metrics_text = read_text(files.metrics, "teacher metrics") if files.metrics.is_file() else ""
    metrics = [json.loads(line) for line in metrics_text.splitlines() if line.strip()]
    result = TrainCheck(stage_dir=files.path, outputs=dict(manifest["outputs"]), metrics=metrics, ran=ran)
    losses = [m["loss"] for m in metrics if isinstance(m.get("loss"), (int, float))]
    if not losses or not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"teacher:{name} logged no finite loss ({files.metrics}): {losses}")
    if result.val_acc is None:
        raise AssertionError(f"teacher:{name} never validated ({files.manifest})")
    if not files.model.is_dir():
        raise AssertionError(f"teacher:{name} saved no model in {files.model}")
    return result


def tiny_experiment(
    modality: str, workdir: str | Path, options: dict[str, Any] | None = None, tasks: int = 2, **sections: Any
) -> Any:
    """The :class:`~mkdcore.config.ExperimentConfig` :func:`derive_and_train` runs: the
    smoke config's shapes (4 frames, 32 px crops, MobileNetV3-small teacher) cut to 2-way
    1-shot on 8 synthetic classes, ``tasks`` training episodes, CPU."""
    from mkdcore.config import config_from_dict

    workdir = Path(workdir)
    training = {"lr": 0.001, "tasks": tasks, "tasks_per_batch": 1, "checkpoint_every": tasks,
                "val_every": tasks, "val_episodes": 2, "log_every": 1}
    data: dict[str, Any] = {
        "name": f"plugin-{modality}",
        "data": {"root": str(workdir / "data"), "split": "synth", "frames": 4, "resize": 36, "crop": 32,
                 "synth": {"classes": TRAIN_CLASSES, "videos_per_class": 2, "size": 40, "seed": 0}},
        "episodes": {"way": 2, "shot": 1, "query_train": 1, "query_test": 1},
        "modalities": {"names": ["rgb"] if modality == "rgb" else ["rgb", modality],
                       "derive": {} if modality == "rgb" else {modality: {"name": modality, "options": dict(options or {})}}},
        "teacher": {"backbone": {"name": "mobilenetv3_small", "options": {"pooling": "avg", "projection": "1fc", "out_dim": 32}},
                    "head": {"name": "mean_distance"}, "query_train": 1, "training": training},
        "fusion": {"query_train": 1},  # the data check sizes episodes for every stage, not only those run
        "runtime": {"device": "cpu", "runs_dir": str(workdir / "runs")},
    }
    data.update(sections)
    return config_from_dict(data, source=f"mkdcore.testing experiment for {modality!r}")


def run_cli(*args: object) -> tuple[int, str, str]:
    """``mkd ARGS`` in this process, through the console entry point (so a user error is
    the one ``error:`` line a user sees): ``(exit code, stdout, stderr)``. Any other
    exception propagates: for a test, a traceback is a failure."""
    import contextlib
    import io

    from mkdcore.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def random_weights(net: Any, device: str = "cpu", std: float = 0.05) -> Any:
    """``net`` (built on the ``meta`` device, e.g. a released network's architecture)
    materialised on ``device`` with small normal weights and neutral BatchNorm statistics:
    seconds faster than the network's own initialisers, for tests and benchmarks that need
    the shapes, not trained values."""
    import torch

    net = net.to_empty(device=device)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.fill_(1.0)
            elif name.endswith(("running_mean", "num_batches_tracked")):
                t.zero_()
            else:
                t.normal_(0, std)
    return net
