"""A worker's stages forked from its zygote keep the contract of a new interpreter.

``workers.runner.spawn_stage`` runs ``tests.zygote_probe`` (``MKD_STAGE_MODULE``) the
way a worker runs a stage; the zygote preloads ``decimal`` instead of torch (cheap, and
no fresh interpreter running the probe has it), so the probe can tell a fork from an exec.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkdcore.parallel import terminate_group
from workers import runner, zygote

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux-only")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def stage_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MKD_STAGE_MODULE", "tests.zygote_probe")
    monkeypatch.setenv("MKD_STAGE_PRELOAD", "decimal")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("MKD_NO_STAGE_ZYGOTE", raising=False)
    zygote.close_shared()
    yield tmp_path
    zygote.close_shared()


def spawn(tmp: Path, **env: str):
    return runner.spawn_stage(str(tmp / "cfg.yaml"), "teacher:rgb", cwd=str(tmp), log_path=tmp / "logs" / "stage.log",
                              progress_file=tmp / "progress.jsonl", extra_env=env or None)


def report(tmp: Path) -> dict:
    """The last stage's report (the log is appended to, as a worker's is)."""
    lines = (tmp / "logs" / "stage.log").read_text().splitlines()
    return json.loads([line for line in lines if line.startswith("{")][-1])


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_forked_stage_is_a_new_session_with_its_argv_env_cwd_log_and_exit_code(stage_env):
    tmp = stage_env
    proc = spawn(tmp, MKD_PROBE_ENV="x", MKD_PROBE_EXIT="7")
    assert isinstance(proc, zygote.ForkedProcess)
    assert proc.wait(timeout=60) == 7 and proc.returncode == 7
    got = report(tmp)
    assert got["preloaded_decimal"], "not forked from the zygote"
    assert got["pid"] == proc.pid == got["pgid"] == got["sid"]  # its own session: cancel reaches its group
    assert got["argv"] == ["run", str(tmp / "cfg.yaml"), "--stages", "teacher:rgb"]
    assert got["probe_env"] == "x" and got["progress"] == str(tmp / "progress.jsonl")
    assert got["cwd"] == str(tmp) and got["path0"] == str(tmp)  # `python -m` puts the working directory first
    assert "to stderr" in (tmp / "logs" / "stage.log").read_text()
    again = spawn(tmp)  # the same zygote serves the next stage
    assert isinstance(again, zygote.ForkedProcess) and again.wait(timeout=60) == 0 and again.pid != proc.pid


def test_sigterm_to_the_group_exits_143_and_the_zygote_ignores_it(stage_env):
    tmp = stage_env
    held = tmp / "held"
    proc = spawn(tmp, MKD_PROBE_HOLD=str(held))
    wait_for(held)
    server = proc.zygote
    os.kill(server.proc.pid, signal.SIGTERM)  # a SLURM step signals every process of the worker
    terminate_group(proc.pid, 10, proc)
    assert proc.wait(timeout=30) == runner.EXIT_TERMINATED  # stopped on request, resumable
    assert server.alive()


def test_the_stage_dies_with_the_zygote(stage_env):
    tmp = stage_env
    held = tmp / "held"
    proc = spawn(tmp, MKD_PROBE_HOLD=str(held))
    wait_for(held)
    proc.zygote.proc.kill()  # what a killed worker task does to it (PR_SET_PDEATHSIG)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{proc.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{proc.pid}"), "the stage outlived its zygote"
    assert isinstance(spawn(tmp), zygote.ForkedProcess)  # a new zygote for the next stage


def test_an_environment_the_zygote_cannot_give_starts_a_new_interpreter(stage_env, monkeypatch):
    tmp = stage_env
    first = spawn(tmp)
    assert isinstance(first, zygote.ForkedProcess) and first.wait(timeout=60) == 0
    proc = spawn(tmp, OMP_NUM_THREADS="3")  # read by OpenMP when torch loads: the zygote's value would win
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=60) == 0
    assert not report(tmp)["preloaded_decimal"]
    assert zygote.unforkable({"OMP_NUM_THREADS": "3", "MKD_X": "1"}, {}) == ["OMP_NUM_THREADS"]
    monkeypatch.setenv("MKD_NO_STAGE_ZYGOTE", "1")
    assert isinstance(spawn(tmp), subprocess.Popen)


def test_a_zygote_older_than_a_change_to_this_process_environment_is_replaced(stage_env, monkeypatch):
    tmp = stage_env
    first = spawn(tmp)
    assert isinstance(first, zygote.ForkedProcess) and first.wait(timeout=60) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # e.g. set by a library the task process imported
    second = spawn(tmp)
    assert isinstance(second, zygote.ForkedProcess) and second.wait(timeout=60) == 0
    assert second.zygote is not first.zygote and not first.zygote.alive()


def test_the_zygote_refuses_to_fork_once_the_cuda_driver_is_loaded(tmp_path, monkeypatch):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    monkeypatch.setattr(zygote, "MAPS", str(maps))
    assert zygote._refuse_reason() is None
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libcuda.so.570.86\n")
    assert "libcuda" in zygote._refuse_reason()

