"""Running one stage as a child process group, and ending such a group.

The stage runs as ``python -m workers.stage_child mkdcore.cli.main run CONFIG --stages NAME``
(:mod:`workers.stage_child`: a SIGTERM before the engine is ready exits 143) in its own
session (process group), so that cancel can signal the trainer *and* its data-loader
children at once (Celery's ``revoke(terminate=True)`` only reaches the pool process).
The child also gets ``PR_SET_PDEATHSIG=SIGKILL``: if the worker's task process dies
(kill -9, OOM), the stage dies with it instead of running on, orphaned, beside the
re-queued copy.

On Linux the child is forked from the task process's zygote (:mod:`workers.zygote`),
which has torch, torchvision and timm imported: the same process contract without ~4
CPU-seconds of imports per stage. ``MKD_NO_STAGE_ZYGOTE=1`` starts a new interpreter
per stage instead, as does an environment the zygote cannot give its children.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from mkdcore import settings
from mkdcore.errors import TERMINATED_EXIT_CODE
from workers import zygote

#: Exit code of a stage that checkpointed and stopped on SIGTERM (128 + 15).
EXIT_TERMINATED = TERMINATED_EXIT_CODE

log = logging.getLogger("mkd.worker")


def stage_argv(config_file: str, stage: str) -> list[str]:
    """``python -m`` arguments of a stage (without the interpreter)."""
    module = settings.STAGE_MODULE.get()  # ``python -m <module> run ...``; tests swap it
    return ["workers.stage_child", module, "run", config_file, "--stages", stage]


def use_zygote() -> bool:
    return sys.platform.startswith("linux") and not settings.NO_STAGE_ZYGOTE.flag()


def stage_preload() -> list[str]:
    """``MKD_STAGE_PRELOAD``'s libraries, in its order ("" for none; unset: the default)."""
    value = settings.STAGE_PRELOAD.raw()
    names = settings.STAGE_PRELOAD.default if value is None else value
    return [n.strip() for n in (names or "").split(",") if n.strip()]


def stage_zygote() -> zygote.Zygote:
    """A zygote with the stage libraries imported."""
    return zygote.Zygote(preload=stage_preload())


def spawn_stage(config_file: str, stage: str, *, cwd: str, log_path: Path, progress_file: Path,
                extra_env: dict[str, str] | None = None) -> subprocess.Popen | zygote.ForkedProcess:
    """Start the stage in a new session with output appended to ``log_path``."""
    env = dict(os.environ)
    env.update(extra_env or {})
    env["MKD_PROGRESS_FILE"] = str(progress_file)
    env["PYTHONUNBUFFERED"] = "1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = stage_argv(config_file, stage)
    cwd_or_none = cwd if os.path.isdir(cwd) else None
    if use_zygote():
        try:
            spawner = zygote.shared(stage_zygote)
            forked = spawner.start(argv, cwd=cwd_or_none or os.getcwd(), env=env, log=str(log_path), session=True)
            if forked is not None:
                log.info("%s: forked from the stage zygote (pid %d) as pid %d", stage, spawner.proc.pid, forked.pid)
                return forked
            log.warning("%s: starting %s as a new interpreter", spawner.refusal, stage)
        except (zygote.ZygoteDied, OSError) as exc:  # gone, or could not be started at all
            log.warning("%s; starting %s as a new interpreter", exc, stage)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=cwd_or_none,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=zygote.die_with_parent if sys.platform.startswith("linux") else None,
        )
