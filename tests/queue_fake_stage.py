"""A stand-in for ``mkd run CONFIG --stages NAME`` used by the queue tests.

It honours the same contract as the real pipeline (docs/internals.md "Stages"): reads
the config, finds its stage in ``mkdcore.stages.dag.plan``, appends progress lines to
``MKD_PROGRESS_FILE``, checkpoints every ``checkpoint_every`` steps under its stage
directory, resumes from that checkpoint, writes the manifest last, and on SIGTERM
checkpoints and exits 143. Steps = the ``tasks`` of the stage's training section,
``MKD_FAKE_STEP_S`` seconds each. Every start is appended to ``<runs_dir>/fake_runs.log``
so tests can count runs, resumes and overlaps.

``MKD_FAKE_HOLD=NAME@STEP``: stage ``NAME`` stops after step ``STEP`` (its checkpoint, when
``STEP`` is a multiple of ``checkpoint_every``, already written) and waits there until it
is signalled (SIGTERM: checkpoint, exit 143) or killed, at most :data:`HOLD_MAX_S`. A test
that needs a stage "still running, with a checkpoint" gets exactly that, on an event,
instead of many slow steps sized to outlast the slowest worker start on a busy machine.
It holds once per stage (the log says so): a later run, resumed or (wrongly) started
over, runs through and the test's checks see what it did.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

#: Longest a held stage waits for its signal; then it goes on (and the test fails on its checks).
HOLD_MAX_S = 120.0


def main(argv: list[str]) -> int:
    # first, as a real stage's engine does before any work: a SIGTERM while this process
    # is still importing (plan() loads the plugins) must checkpoint, not kill it
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    from mkdcore.config import config_from_dict
    from mkdcore.stages.dag import plan

    assert argv[0] == "run" and argv[2] == "--stages", argv
    cfg = config_from_dict(yaml.safe_load(Path(argv[1]).read_text()), check_plugins=False)
    from mkdcore.stages import provenance
    from mkdcore.stages.base import StageContext, write_manifest

    started = time.time()
    nodes = {n.name: n for n in plan(cfg)}
    node = nodes[argv[3]]
    training = {"teacher": cfg.teacher.training, "fuse": cfg.fusion.training, "student": cfg.training}.get(node.kind)
    total = training.tasks if training else 1
    every = training.checkpoint_every if training else 1
    step_s = float(os.environ.get("MKD_FAKE_STEP_S", "0.01"))
    ckpt = node.stage_dir / "checkpoints" / "last.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.is_file() else 0
    runs_log = Path(cfg.runtime.runs_dir) / "fake_runs.log"
    held = runs_log.is_file() and f"\n{node.name} {node.key} hold " in "\n" + runs_log.read_text()
    with open(runs_log, "a") as fh:
        fh.write(f"{node.name} {node.key} start pid={os.getpid()} from={start} t={time.time():.3f}\n")
    progress = os.environ.get("MKD_PROGRESS_FILE")
    hold_stage, _, hold_step = os.environ.get("MKD_FAKE_HOLD", "").rpartition("@")

    def save(step: int) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        os.replace(tmp, ckpt)

    print(f"{node.name}: steps {start}..{total}", flush=True)
    if os.environ.get("MKD_FAKE_FAIL") == node.name:
        print(f"{node.name}: boom (MKD_FAKE_FAIL)", flush=True)
        return 1
    for step in range(start + 1, total + 1):
        if stop["flag"]:
            save(step - 1)
            print(f"{node.name}: SIGTERM, checkpoint at {step - 1}", flush=True)
            return 143
        time.sleep(step_s)
        if step % every == 0:
            save(step)
        if progress:
            with open(progress, "a") as fh:
                fh.write(json.dumps({"time": time.time(), "stage": node.name, "step": step, "total": total,
                                     "loss": 1.0 / step, "val_acc": 0.5 if step % every == 0 else None,
                                     "eta_s": (total - step) * step_s, "event": "step"}) + "\n")
        if node.name == hold_stage and step == int(hold_step) and not held:
            with open(runs_log, "a") as fh:
                fh.write(f"{node.name} {node.key} hold pid={os.getpid()} at={step} t={time.time():.3f}\n")
            deadline = time.monotonic() + HOLD_MAX_S
            while not stop["flag"] and time.monotonic() < deadline:
                time.sleep(0.02)
    # the real manifest (provenance included), minus plugin versions: no plugin is built here
    write_manifest(StageContext(cfg=cfg, node=replace(node, components=[]), nodes=nodes, device="cpu"), {},
                   started, provenance.inputs_record(node.input_dirs(nodes)))
    with open(runs_log, "a") as fh:
        fh.write(f"{node.name} {node.key} done pid={os.getpid()} t={time.time():.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
