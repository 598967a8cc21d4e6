"""Real ``mkd`` processes for the fault tests without paying torch's import in each.

The process faults (kill -9, a full disk) need a real process, several per session;
each ``python -m mkdcore.cli.main`` that trains or extracts would import torch +
torchvision + timm first (~4 CPU-seconds on the CI machine). They are forked from the
worker's own stage zygote (:mod:`workers.zygote`, one per test process): a real process
with its own pid, rlimits, exit status and stdio (SIGKILL, ``RLIMIT_FSIZE`` and exit
codes behave as for an exec'd ``mkd``) that runs ``mkdcore.cli.main`` as ``python -m``
does, with nothing of mkd's imported before the fork.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from workers.runner import stage_preload
from workers.zygote import ForkedProcess, Zygote, shared

REPO = Path(__file__).resolve().parents[2]


class TestZygote(Zygote):
    """The zygote with this test process's environment and the repository on the path."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        super().__init__(preload=stage_preload(), cwd=str(REPO))  # what a training `mkd` imports first

    @classmethod
    def environment(cls) -> dict[str, str]:
        return _without_pytest({**os.environ, "PYTHONPATH": str(REPO)})

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None,
            capture: bool = True, session: bool = False) -> ForkedProcess:
        """Fork ``mkd ARGV``; the fault tests' environments differ only in ``MKD_*``.
        ``session``: in a process group of its own, as a queue stage runs."""
        child = self.start(["mkdcore.cli.main", *argv], cwd=str(cwd), env=_without_pytest(env), capture=capture,
                           fsize=fsize, session=session)
        assert child is not None, f"the zygote cannot fork this command: {self.refusal}"
        return child


def _without_pytest(env: dict[str, str]) -> dict[str, str]:
    """``PYTEST_CURRENT_TEST`` names the running test: it differs between the zygote's
    start and every later command, and no mkd process reads it."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


def zygote() -> TestZygote:
    """This test process's zygote."""
    made = shared(TestZygote)
    assert isinstance(made, TestZygote)
    return made


def run_mkd(argv: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None,
            timeout: float = 240) -> tuple[int, str, str]:
    """``mkd ARGV`` in a zygote child to the end: (exit code, stdout, stderr)."""
    child = zygote().run(argv, cwd, env, fsize)
    try:
        code = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=60)
        raise
    return code, child.out, child.err
