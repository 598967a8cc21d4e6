"""The fault table's shape: one :class:`Case` per bad input or fault.

Why a table: the same rows drive the tests (``test_faults.py``) and the user-facing
list of what mkd does with each fault (``docs/reliability.md``, written by
``python -m tests.faults.gen_docs``), so the page cannot claim a behaviour no test
checks. Cases live in ``cases_<area>.py``; :func:`all_cases` collects them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:
    from tests.faults.workspace import Outcome, Workspace

#: finished outputs that no failing command may alter (globs relative to the workspace)
FINISHED = ("runs/stages/**", "runs/smoke/**", "runs/jobs/**", "data/**")
#: a failure never writes a manifest (a new one would mark failed work as done)
NO_NEW_MANIFEST = ("runs/stages/*/*/manifest.json",)
#: validation failures happen before any stage starts
NOTHING_STARTED = ("runs/stages/*/*",)

AREAS = ("config", "names", "data", "splits", "frames", "videos", "features", "checkpoints", "models",
         "results", "job records", "messages", "plugins", "processes", "disk full", "kill -9")

CASE_MODULES = ("cases_config", "cases_data", "cases_artifacts", "cases_jobs", "cases_process")


@dataclass(frozen=True)
class Case:
    """One bad input or fault, what the suite does to cause it and what mkd must do.

    ``argv`` are ``mkd`` arguments with ``{cfg} {runs} {data} {ws} {job} {episodes}``
    placeholders (see :meth:`Workspace.fmt`). ``mode`` says how it runs: ``inprocess``
    through ``mkdcore.cli.main.main`` (fast, most cases), ``subprocess`` (a real
    process, optionally under ``rlimit_fsize`` bytes with SIGXFSZ ignored), or ``call``
    (``call(ws)`` drives the fault itself: kill -9 and rerun, queue messages).
    """

    id: str
    area: str
    title: str  # what the suite does (docs: "what is done")
    behaviour: str  # what mkd must do (docs: "what mkd does")
    argv: tuple[str, ...] = ()
    setup: Callable[["Workspace"], None] | None = None
    expect_exit: int = 2
    expect_in_error: str | None = None  # substring of the one error line (a file, field or value)
    protected: tuple[str, ...] = FINISHED
    unprotected: tuple[str, ...] = ()
    forbid_new: tuple[str, ...] | None = None  # default: NO_NEW_MANIFEST for failures, nothing for successes
    mode: Literal["inprocess", "subprocess", "call"] = "inprocess"
    rlimit_fsize: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    call: Callable[["Workspace"], "Outcome"] | None = None
    check: Callable[["Workspace", "Outcome"], None] | None = None
    awaiting: str | None = None  # xfail(strict) reason while the fix has not landed
    error_prefix: str = "error:"  # report commands (data import) list failures as "failed: ..." lines

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"case {self.id}: unknown area {self.area!r}")
        if (self.mode == "call") != (self.call is not None):
            raise ValueError(f"case {self.id}: mode 'call' needs call=, and only it")

    @property
    def new_forbidden(self) -> tuple[str, ...]:
        if self.forbid_new is not None:
            return self.forbid_new
        return NO_NEW_MANIFEST if self.expect_exit != 0 else ()

    @property
    def command(self) -> str:
        """The command as the docs show it."""
        if self.mode == "call":
            return "(scripted, see the test)"
        return "mkd " + " ".join(self.argv)


def all_cases() -> list[Case]:
    """Every case of every ``cases_*`` module, in area order; ids are unique."""
    cases: list[Case] = []
    for name in CASE_MODULES:
        cases.extend(importlib.import_module(f"tests.faults.{name}").CASES)
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"duplicate case ids: {sorted(dupes)}")
    return sorted(cases, key=lambda c: AREAS.index(c.area))
