"""Progress without a terminal: when stdout is a file (nohup, SLURM, `mkd logs JOB`),
stages print plain progress lines instead of nothing."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from mkdcore.progress import ProgressReporter, plain_line


def test_mkd_run_to_a_file_leaves_progress_lines(smoke_template: Path, monkeypatch) -> None:
    """``mkd run`` with stdout on a file (the console entry point in this process, stdout
    redirected to the file: what the reporter checks is ``sys.stdout.isatty()``), on a
    private copy of the session's smoke experiment, the two stages forced to run again."""
    from mkdcore.cli.main import main
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    log = ws.root / "log.txt"
    monkeypatch.setenv("MKD_PROGRESS_EVERY", "0")
    monkeypatch.delenv("MKD_PROGRESS_FILE", raising=False)
    err = io.StringIO()
    with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["run", str(ws.cfg), "--stages", "derive:depth,teacher:rgb", "--force", "derive:depth,teacher:rgb",
                  "--set", "teacher.training.log_every=1"])
        except SystemExit as exc:
            assert exc.code in (0, None), err.getvalue()[-2000:]
    assert "[run ] derive:depth" in err.getvalue() and "[run ] teacher:rgb" in err.getvalue(), err.getvalue()
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
