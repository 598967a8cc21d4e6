"""Process-level faults: kill -9 at several points of a stage (the rerun resumes and
finishes), a full disk (a file-size limit), `mkd down` on a reused PID, broken plugins."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

from tests.faults.table import Case
from tests.faults.workspace import REPO, Outcome, Workspace, mkd_env, run_subprocess
from tests.faults.zygote import zygote

LONGER = ("--set", "training.tasks=16", "--set", "training.checkpoint_every=2", "--set", "training.log_every=1",
          "--set", "training.val_every=8")


def _new_dirs(ws: Workspace, kind: str, before: set[str]) -> list[Path]:
    return [p for p in (ws.runs / "stages" / kind).iterdir() if p.name not in before]


def _kill_then_rerun(argv: tuple[str, ...], kind: str, ready: Callable[[Workspace, list[Path], list[dict]], bool],
                     site: bool = False, at_kill: Callable[[list[Path]], None] | None = None):
    """Start ``mkd ARGV``, SIGKILL it once ``ready`` says so, then run it again to the end.
    ``site``: the case's plugin folder (``<ws>/site``) is on both runs' path; ``at_kill``
    checks the killed run's folders (the state the rerun must recover from)."""
    def call(ws: Workspace) -> Outcome:
        before = {p.name for p in (ws.runs / "stages" / kind).iterdir()}
        progress = ws.root / "progress.jsonl"
        path = {"PYTHONPATH": os.pathsep.join([str(REPO), str(ws.root / "site")])} if site else {}
        # a real process (forked from the zygote, which has torch imported), output discarded
        proc = zygote().run([ws.fmt(a) for a in argv], ws.root,
                            mkd_env(ws, {"MKD_PROGRESS_FILE": str(progress), **path}), capture=False)
        deadline = time.monotonic() + 180
        try:
            while True:
                events = [json.loads(x) for x in progress.read_text().splitlines() if x.strip()] if progress.exists() else []
                if ready(ws, _new_dirs(ws, kind, before), events):
                    break
                assert proc.poll() is None, "mkd run finished before it could be killed"
                assert time.monotonic() < deadline, "the kill point was never reached"
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait()
        if at_kill:
            at_kill(_new_dirs(ws, kind, before))
        rerun = run_subprocess(ws, [ws.fmt(a) for a in argv], env=path)
        return Outcome(rerun.code, rerun.out, rerun.err, extra={"dirs": _new_dirs(ws, kind, before)})
    return call


def _started(stage: str):
    return lambda ws, dirs, events: any(e["stage"] == stage and e["event"] == "start" for e in events)


#: a logger that stops the stage, once, right after it logged a task beyond its last
#: checkpoint: the window a resume must clean up (metrics lines of work it will redo)
HOLD_PLUGIN = """
import time
from pathlib import Path

from mkdcore.hookspecs import hookimpl
from mkdcore.tracking import Logger


class HoldAfterCheckpoint(Logger):
    def start(self, run):
        self.last, self.marker = run.stage_dir / "checkpoints" / "last.pt", run.runs_dir.parent / "held"

    def scalars(self, task, values):
        if self.last.is_file() and not self.marker.exists():
            self.marker.write_text(str(task))
            time.sleep(300)  # until the case kills the process


@hookimpl
def register_loggers(register):
    register("fault_hold", HoldAfterCheckpoint, description="fault tests: hold after a checkpoint")
"""


def _hold_plugin(ws: Workspace) -> None:
    _install_plugin(ws, "mkd_fault_hold", HOLD_PLUGIN)


def _held(ws: Workspace, dirs: list[Path], events: list[dict]) -> bool:
    return (ws.root / "held").exists()


def _work_beyond_checkpoint(dirs: list[Path]) -> None:
    """The killed run logged a task its last checkpoint does not hold (what the rerun redoes)."""
    import torch

    (d,) = dirs
    saved = torch.load(d / "checkpoints" / "last.pt", weights_only=True)["task"]
    logged = [json.loads(x)["task"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert logged and max(logged) > saved, f"no metrics line beyond the checkpoint at task {saved}: {logged}"


def _finished_cleanly(ws: Workspace, got: Outcome) -> None:
    """The resumed stage finished: a manifest, and metrics with each task once, in order."""
    dirs = got.extra["dirs"] or [ws.stage("evaluate")]
    for d in dirs:
        assert (d / "manifest.json").is_file(), f"{d} has no manifest after the rerun"
        metrics = d / "metrics.jsonl"
        if metrics.is_file():
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            tasks = [r["task"] for r in rows if "loss" in r]  # training lines (validation lines repeat the task)
            assert tasks == sorted(set(tasks)), f"metrics.jsonl repeats or reorders tasks after the restart: {tasks}"


def _unfinish_evaluate(ws: Workspace) -> None:
    d = ws.unfinish("evaluate")
    (d / "results.json").unlink()


# ------------------------------------------------------------------ mkd down
def _down_spares_stranger(ws: Workspace) -> Outcome:
    """state.json names a PID that is now some other process: `mkd down` must not kill it."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    ws.cleanups.append(lambda: (stranger.kill(), stranger.wait()))
    state = ws.root / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"worker_pid": stranger.pid, "url": "redis://127.0.0.1:9/0"}))
    got = run_subprocess(ws, ["down", "--grace", "1"])
    got.extra["alive"] = stranger.poll() is None
    return got


def _stranger_alive(ws: Workspace, got: Outcome) -> None:
    assert got.extra["alive"], "mkd down killed a process it did not start"


# ------------------------------------------------------------------ plugins
def _install_plugin(ws: Workspace, module: str, source: str) -> None:
    """A distribution in ``<ws>/site`` whose `mkd` entry point is ``module`` with ``source``."""
    site = ws.root / "site"
    name = module.replace("_", "-")
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[mkd]\n{module.removeprefix('mkd_')} = {module}\n")
    (site / f"{module}.py").write_text(source)
    importlib.invalidate_caches()


def _broken_plugin(ws: Workspace) -> None:
    """An installed distribution whose `mkd` entry point fails to import."""
    _install_plugin(ws, "mkd_fault_broken", "raise ImportError('mkd_fault_broken needs a module that is not installed')\n")


def _reported_once(ws: Workspace, got: Outcome) -> None:
    lines = [x for x in got.err.splitlines() if "mkd_fault_broken" in x or "mkd-fault-broken" in x or "fault_broken" in x]
    assert len(lines) == 1, f"the broken plugin should be reported on one line, got: {got.err[-2000:]}"


CASES = [
    # ---------------------------------------------------------------- kill -9
    Case("kill9-before-first-checkpoint", "kill -9", "`kill -9` a student stage as it starts, before its first checkpoint, then rerun",
         "The rerun starts the stage over and finishes; metrics.jsonl has each task once", mode="call", expect_exit=0,
         call=_kill_then_rerun(("run", "{cfg}", "--stages", "student:baseline", *LONGER), "student", _started("student:baseline")),
         check=_finished_cleanly),
    Case("kill9-after-checkpoint", "kill -9", "`kill -9` a student stage after a checkpoint, once it logged a task beyond it, then rerun",
         "The rerun resumes from last.pt and finishes; metrics.jsonl has each task once", mode="call", expect_exit=0,
         setup=_hold_plugin,
         call=_kill_then_rerun(("run", "{cfg}", "--stages", "student:baseline", *LONGER, "--set", "logging.loggers=[jsonl, fault_hold]"),
                               "student", _held, site=True, at_kill=_work_beyond_checkpoint),
         check=_finished_cleanly),
    Case("kill9-during-evaluate", "kill -9", "`kill -9` the evaluate stage as it starts, then rerun",
         "The rerun redoes evaluate and writes results; other stages untouched", mode="call", expect_exit=0,
         setup=_unfinish_evaluate, unprotected=("@evaluate",),
         call=_kill_then_rerun(("run", "{cfg}", "--stages", "evaluate"), "evaluate", _started("evaluate")),
         check=_finished_cleanly),
    # --------------------------------------------------------------- disk full
    Case("diskfull-checkpoint", "disk full", "File-size limit 1 MB (checkpoints are 4 MB) while a student trains",
         "One line naming the checkpoint and 'no space'; no `last.pt.tmp-PID` left; no manifest", mode="subprocess",
         argv=("run", "{cfg}", "--stages", "student:baseline", "--set", "training.tasks=6"), rlimit_fsize=1_000_000,
         expect_in_error="no space"),
    Case("diskfull-features", "disk full", "File-size limit 300 bytes while features are written",
         "One line naming the file; no temp file left; no manifest", mode="subprocess",
         argv=("run", "{cfg}", "--stages", "features:rgb", "--force", "features:rgb"), rlimit_fsize=300,
         expect_in_error="no space", unprotected=("@features:rgb",)),
    Case("diskfull-report", "disk full", "File-size limit 4 KB while the report is rewritten",
         "One line naming the file; the previous report files in runs/smoke/ are intact", mode="subprocess",
         argv=("run", "{cfg}", "--stages", "report", "--force", "report"), rlimit_fsize=4000,
         expect_in_error="no space", unprotected=("@report",)),
    Case("diskfull-episodes", "disk full", "File-size limit 100 bytes, `mkd data episodes --out`",
         "One line naming the output file; no temp file left", mode="subprocess",
         argv=("data", "episodes", "{data}", "--split", "test", "--n", "20", "--way", "3", "--shot", "1", "--out", "{ws}/ep.json"), rlimit_fsize=100,
         expect_in_error="ep.json"),
    Case("diskfull-job-record", "disk full", "File-size limit 200 bytes, `mkd cancel JOB` (rewrites job.json)",
         "One line naming job.json; the record is unchanged; no temp file left", mode="subprocess",
         argv=("cancel", "{job}", "--no-wait", "--runs-dir", "{runs}"), rlimit_fsize=200, expect_in_error="job.json"),
    # ------------------------------------------------------------- processes
    Case("down-reused-pid", "processes", "`mkd down` when state.json names a PID that is now another process",
         "Leaves that process alone (checks start time and command line first)", mode="call", expect_exit=0,
         call=_down_spares_stranger, check=_stranger_alive),
    # ---------------------------------------------------------------- plugins
    Case("plugin-broken-plugins-cmd", "plugins", "An installed plugin that fails to import, `mkd plugins`",
         "Lists the others; reports the broken one once, on one line (today: every command failed)",
         argv=("plugins",), setup=_broken_plugin, expect_exit=0, check=_reported_once),
    Case("plugin-broken-run", "plugins", "The same broken plugin, `mkd run --list` of a config that does not use it",
         "Works; reports the broken plugin once", argv=("run", "{cfg}", "--list"), setup=_broken_plugin, expect_exit=0,
         check=_reported_once),
]
