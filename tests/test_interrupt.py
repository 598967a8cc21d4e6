"""Ctrl-C during `mkd run`: the first one stops training at the end of its step with a
checkpoint (exit 130, the same command resumes); a second one stops at once."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from mkdcore import distributed
from mkdcore.engine import _Terminator
from mkdcore.errors import TERMINATED_EXIT_CODE, Terminated


def _until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_first_ctrl_c_asks_for_a_checkpoint_and_the_second_aborts():
    before = signal.getsignal(signal.SIGINT)
    with _Terminator() as term:
        os.kill(os.getpid(), signal.SIGINT)
        _until(lambda: term.requested)
        assert (term.signum, term.exit_code, term.how) == (signal.SIGINT, 130, "interrupted (Ctrl-C)")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _until(lambda: False)
    assert signal.getsignal(signal.SIGINT) is before
    with _Terminator() as term:
        os.kill(os.getpid(), signal.SIGTERM)
        _until(lambda: term.requested)
        assert (term.exit_code, term.how) == (TERMINATED_EXIT_CODE, "stopped by SIGTERM")


def test_the_rank_launcher_exits_with_the_signal_it_got():
    """Ranks are asked to stop with SIGTERM whatever the launcher got; the launcher's
    signal decides the exit code (130 for a Ctrl-C, 143 for SIGTERM)."""
    rank_said = {0: ("terminated", ("teacher:rgb: stopped by SIGTERM at task 8, checkpoint saved", 143))}
    for got, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (None, 143)):
        with pytest.raises(Terminated) as exc:
            distributed._outcome(rank_said, [], got, Terminated)
        assert exc.value.exit_code == code
    with pytest.raises(Terminated, match="stopped by SIGINT before training started") as exc:
        distributed._outcome({0: ("died", None)}, [], signal.SIGINT, Terminated)  # stopped while starting
    assert exc.value.exit_code == 130


def test_ctrl_c_during_mkd_run_saves_a_checkpoint_and_exits_130(smoke_template):
    from tests.faults.workspace import signal_training_teacher

    # what a terminal sends on Ctrl-C: to its whole foreground group, loader worker included
    got, stage = signal_training_teacher(smoke_template, signal.SIGINT)
    assert got.code == 130, got.err[-3000:]
    assert "Traceback" not in got.err
    assert "Ctrl-C: stopping after this step with a checkpoint" in got.err
    assert "interrupted (Ctrl-C) at task" in got.err and "the same command resumes from it" in got.err
    assert 4 <= torch.load(stage / "checkpoints" / "last.pt", weights_only=True)["task"] < 2000
    assert not (stage / "manifest.json").exists()
