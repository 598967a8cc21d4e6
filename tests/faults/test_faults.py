"""Every row of the fault table, run against a private copy of a finished experiment.

Each case asserts the exit code; for a failure exactly one ``error:`` line on stderr
and no traceback (an exception other than MkdError escaping ``main`` counts as one);
that the protected finished outputs have the same checksums before and after; that no
temporary file is left behind; and that nothing the case forbids (a new manifest, a
started stage) appeared.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults.gen_docs import render
from tests.faults.table import Case, all_cases
from tests.faults.workspace import REPO, Outcome, Workspace, fresh, mkd_env, retire, run_subprocess

CASES = all_cases()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=f"awaiting fix: {case.awaiting}")] if case.awaiting else []
    return pytest.param(case, id=case.id, marks=marks)


def run_inprocess(ws: Workspace, case: Case, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``mkd ARGV`` through the console entry point, in this process, from the workspace."""
    from mkdcore import plugins as plugin_module
    from mkdcore.cli.main import main

    for key, value in mkd_env(ws, case.env).items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(ws.root)
    site = ws.root / "site"
    if site.is_dir():  # a case installed a plugin distribution there
        monkeypatch.syspath_prepend(str(site))
    previous = plugin_module.set_manager(None)  # entry points are read afresh for this case
    capfd.readouterr()
    escaped = None
    try:
        main([ws.fmt(a) for a in case.argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - anything but MkdError escaping main is a traceback
        code, escaped = 1, exc
    finally:
        plugin_module.set_manager(previous)
    out, err = capfd.readouterr()
    return Outcome(code, out, err, escaped)


def check_outcome(case: Case, got: Outcome) -> None:
    assert got.escaped is None, f"{type(got.escaped).__name__} escaped main() (a traceback for the user): {got.escaped!r}"
    assert "Traceback" not in got.err, got.err[-3000:]
    # report commands (`mkd data check`) print their one problem line in the report on stdout
    errors = [line for line in (got.err + got.out).splitlines() if line.startswith(case.error_prefix)]
    if case.expect_exit == 0:
        assert got.code == 0, got.err[-3000:]
        assert not errors, errors
        return
    assert got.code == case.expect_exit, f"exit {got.code}, want {case.expect_exit}\n{got.err[-3000:]}"
    assert len(errors) == 1, f"want exactly one {case.error_prefix!r} line, got {len(errors)}:\n{got.err[-3000:]}"
    if case.expect_in_error:  # a report may wrap the line: then the name is in the report's text
        where = errors[0] if got.err.strip() else " ".join(got.out.split())
        assert case.expect_in_error.lower() in where.lower(), f"{case.expect_in_error!r} not in {where[-500:]!r}"


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_fault(case: Case, fault_template: Path, capfd, monkeypatch) -> None:
    ws = fresh(fault_template)
    failed = True
    try:
        if case.setup:
            case.setup(ws)
        before = ws.snapshot(case.protected, case.unprotected)
        forbidden_before = ws.matches(case.new_forbidden)
        temps_before = ws.temp_files()
        if case.mode == "inprocess":
            got = run_inprocess(ws, case, capfd, monkeypatch)
        elif case.mode == "subprocess":
            got = run_subprocess(ws, [ws.fmt(a) for a in case.argv], case.env, case.rlimit_fsize)
        else:
            assert case.call is not None
            got = case.call(ws)
        check_outcome(case, got)
        after = ws.snapshot(case.protected, case.unprotected)
        changed = sorted(k for k in before if after.get(k) != before[k])
        assert not changed, f"finished outputs lost or altered: {changed[:10]}"
        new = sorted(ws.matches(case.new_forbidden) - forbidden_before)
        assert not new, f"appeared though the case forbids it: {new[:10]}"
        left = sorted(ws.temp_files() - temps_before)
        assert not left, f"temporary files left behind: {left[:10]}"
        if case.check:
            case.check(ws, got)
        failed = False
    finally:
        retire(ws, case.id, failed)


def test_enough_cases() -> None:
    assert len(CASES) >= 55
    assert {c.area for c in CASES} >= {"config", "data", "splits", "frames", "videos", "features", "checkpoints",
                                         "job records", "messages", "names", "disk full", "kill -9"}


def test_reliability_doc_is_generated_from_the_table() -> None:
    doc = REPO / "docs" / "reliability.md"
    assert doc.is_file() and doc.read_text() == render(CASES), (
        f"docs/reliability.md is out of date: run `{Path(sys.executable).name} -m tests.faults.gen_docs`")
