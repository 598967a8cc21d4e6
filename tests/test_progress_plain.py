"""Progress without a terminal: when stdout is a file (nohup, SLURM, `mkd logs JOB`),
stages print plain progress lines instead of nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mkdcore.progress import ProgressReporter, plain_line

ROOT = Path(__file__).resolve().parents[1]


def test_mkd_run_to_a_file_leaves_progress_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "mkdcore.cli.main", "run", str(ROOT / "configs" / "smoke.yaml"),
           "--stages", "derive:depth,teacher:rgb", "--set", f"data.root={tmp_path / 'data'}",
           "--set", f"runtime.runs_dir={tmp_path / 'runs'}", "--set", "teacher.training.log_every=1"]
    env = {**os.environ, "MKD_PROGRESS_EVERY": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("MKD_PROGRESS_FILE", None)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = log.read_text().splitlines()
    teacher = [line for line in lines if " progress teacher:rgb " in line]
    assert any(re.search(r"progress teacher:rgb 2/4 tasks \(50\.0%\) loss=[\d.]+ [\d.]+ tasks/s eta \d+:\d\d:\d\d", line)
               for line in teacher), lines
    assert teacher[-1].split(" ", 1)[1].startswith("progress teacher:rgb 4/4 tasks (100.0%) done loss=") and "val_acc=" in teacher[-1]
    assert any(" progress derive:depth " in line and " videos " in line for line in lines), lines  # the derive bar, too


def test_plain_lines_only_when_asked_and_rate_limited(capsys) -> None:
    quiet = ProgressReporter("teacher:rgb", total=10, show=False, plain=False)
    quiet.start()
    quiet.update(5, loss=0.5)
    quiet.finish(10)
    assert capsys.readouterr().out == ""
    logged = ProgressReporter("teacher:rgb", total=10, show=False, plain=True)
    logged.plain_every = 3600.0  # nothing between start and done within an hour
    logged.start()
    for step in range(1, 10):
        logged.update(step, loss=1.0 / step)
    logged.finish(10)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].endswith("0/10 tasks (0.0%) start") and " 10/10 tasks (100.0%) done loss=0.1111 " in out[1]


def test_plain_line_format() -> None:
    line = plain_line("student:lite-mkd", 40, 70020, "tasks", {"loss": 1.23456, "val_acc": 0.45}, 2.5, 27992.0)
    assert line.split(" ", 1)[1] == "progress student:lite-mkd 40/70020 tasks (0.1%) loss=1.235 val_acc=0.45 2.5 tasks/s eta 7:46:32"
