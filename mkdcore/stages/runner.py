"""Run the stages of an experiment in-process, skipping the finished ones."""

from __future__ import annotations

import fcntl
import importlib
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from mkdcore.config import ExperimentConfig
from mkdcore.distributed import run_stage
from mkdcore.errors import MkdError
from mkdcore.names import stage_name
from mkdcore.preflight import check_experiment
from mkdcore.stages import provenance
from mkdcore.stages.base import StageContext, StageNode, write_manifest, write_started
from mkdcore.stages.dag import plan, select

#: stage kind -> "module:function"; each function takes a StageContext and returns
#: the outputs recorded in the manifest.
STAGE_FUNCTIONS: dict[str, str] = {
    "data": "mkdcore.stages.data:run",
    "derive": "mkdcore.stages.derive:run",
    "teacher": "mkdcore.stages.teacher:run",
    "features": "mkdcore.stages.features:run",
    "fuse": "mkdcore.stages.fuse:run",
    "mm_features": "mkdcore.stages.mm_features:run",
    "student": "mkdcore.stages.student:run",
    "evaluate": "mkdcore.stages.evaluate:run",
    "report": "mkdcore.stages.report:run",
}


class StageBusy(MkdError):
    """Another process holds this stage's lock."""


def stage_function(kind: str) -> Callable[[StageContext], dict[str, Any]]:
    module, _, attr = STAGE_FUNCTIONS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


@contextmanager
def stage_lock(node: StageNode) -> Iterator[None]:
    """An exclusive lock on the stage directory (shared storage safe enough for one
    stage at a time); a second runner of the same stage fails fast."""
    node.stage_dir.mkdir(parents=True, exist_ok=True)
    path = node.files.lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageBusy(f"stage {node.name} ({node.stage_dir}) is being run by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def forced_closure(nodes: list[StageNode], force: list[str]) -> set[str]:
    """Stages named (or of a kind named) in ``force`` plus everything downstream of them:
    redoing a teacher must redo what was computed from it."""
    force = [stage_name(name) for name in force]  # --force is user text
    forced = {n.name for n in nodes if n.name in force or n.kind in force}
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.name not in forced and any(d in forced for d in n.deps):
                forced.add(n.name)
                changed = True
    return forced


def clear_outputs(node: StageNode) -> None:
    """Forget a stage's results (manifest first, so a crash midway leaves nothing that
    looks finished; then checkpoints and metrics, so training starts over instead of
    resuming). Frames ``derive`` wrote into the dataset root are handled by the derive
    stage itself (a forced or re-optioned derive rebuilds them, see
    :func:`mkdcore.data.derive.derive_dataset`)."""
    import shutil

    node.manifest_path.unlink(missing_ok=True)
    if not node.stage_dir.is_dir():
        return
    for child in node.stage_dir.iterdir():
        if child == node.files.lock:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def run_experiment(
    cfg: ExperimentConfig,
    stages: list[str] | None = None,
    force: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, StageNode], list[str]]:
    """Run the selected stages (and their dependencies) in DAG order.

    Returns the plan's nodes by name and the names of the stages that ran (not skipped)."""
    from mkdcore.device import resolve_device
    from mkdcore import speed

    speed.apply_process_settings(cfg.runtime.threads, cfg.runtime.malloc)
    device = resolve_device(cfg.runtime.device)
    nodes = plan(cfg)
    by_name = {n.name: n for n in nodes}
    forced = forced_closure(nodes, force or [])
    # freshness of each stage folder, computed once (the dataset probe scans every video
    # folder). Safe to keep while stages run: a stage is memoised fresh only if its whole
    # ancestry is, and fresh stages do not run unless forced (then the forced closure redoes
    # their readers); a stage that ran is dropped so its readers see its new result.
    memo: dict = {}
    check_experiment(cfg, [n for n in select(nodes, stages) if n.name in forced or not n.freshness(by_name, memo)])
    ran: list[str] = []
    for node in select(nodes, stages):
        fresh = node.freshness(by_name, memo)
        if fresh and node.name not in forced:
            echo(f"[skip] {node.name} (done: {node.stage_dir})")
            continue
        why = "forced" if node.name in forced else fresh.reason
        echo(f"[run ] {node.name} ({why}) -> {node.stage_dir}")
        with stage_lock(node):
            fresh = node.freshness(by_name)  # another process may have finished it meanwhile
            if fresh and node.name not in forced:
                continue
            inputs = provenance.inputs_record(node.input_dirs(by_name))
            if node.name in forced or not resumable(node, inputs):
                clear_outputs(node)
            ctx = StageContext(cfg=cfg, node=node, nodes=by_name, device=device, forced=node.name in forced)
            started = time.time()
            write_started(ctx, inputs)
            outputs = run_stage(ctx, STAGE_FUNCTIONS[node.kind], stage_function(node.kind))  # on runtime.devices ranks
            write_manifest(ctx, outputs, started, inputs)
        memo.pop(node.stage_dir, None)
        ran.append(node.name)
        echo(f"[done] {node.name} in {time.time() - started:.1f} s")
    return by_name, ran


def resumable(node: StageNode, inputs: dict[str, dict[str, str | None]]) -> bool:
    """May an unfinished run in the stage directory be continued? Only when no (stale)
    manifest is there and the interrupted run was made from exactly these inputs: a
    checkpoint trained on an older teacher's features must not be resumed."""
    if node.manifest_path.exists():
        return False
    started = provenance.started_inputs(node.stage_dir)
    return started is not None and started.get("inputs") == inputs
