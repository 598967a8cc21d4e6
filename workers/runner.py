"""Running one stage as a child process group, and ending such a group.

The stage runs as ``python -m workers.stage_child mkdcore.cli.main run CONFIG --stages NAME``
(:mod:`workers.stage_child`: a SIGTERM before the engine is ready exits 143) in its own
session (process group), so that cancel can signal the trainer *and* its data-loader
children at once (Celery's ``revoke(terminate=True)`` only reaches the pool process).
The child also gets ``PR_SET_PDEATHSIG=SIGKILL``: if the worker's task process dies
(kill -9, OOM), the stage dies with it instead of running on, orphaned, beside the
re-queued copy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from mkdcore import settings
from mkdcore.errors import TERMINATED_EXIT_CODE

#: Exit code of a stage that checkpointed and stopped on SIGTERM (128 + 15).
EXIT_TERMINATED = TERMINATED_EXIT_CODE


def stage_argv(config_file: str, stage: str) -> list[str]:
    module = settings.STAGE_MODULE.get()  # ``python -m <module> run ...``; tests swap it
    return [sys.executable, "-m", "workers.stage_child", module, "run", config_file, "--stages", stage]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the watchdog still re-queues, the stage lock still prevents overlap


def spawn_stage(config_file: str, stage: str, *, cwd: str, log_path: Path, progress_file: Path,
                extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the stage in a new session with output appended to ``log_path``."""
    env = dict(os.environ)
    env.update(extra_env or {})
    env["MKD_PROGRESS_FILE"] = str(progress_file)
    env["PYTHONUNBUFFERED"] = "1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            stage_argv(config_file, stage),
            cwd=cwd if os.path.isdir(cwd) else None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
