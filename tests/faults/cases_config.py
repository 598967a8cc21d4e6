"""Config files, overrides, plugin choices, and experiment names (validated before any stage)."""

from __future__ import annotations

from tests.faults.table import FINISHED, NOTHING_STARTED, Case
from tests.faults.workspace import Workspace


def _write_cfg(text: bytes | str):
    def setup(ws: Workspace) -> None:
        ws.write(ws.cfg, text)
    return setup


def _edit(path: str, value):
    def setup(ws: Workspace) -> None:
        ws.edit_config(path, value)
    return setup


def _no_escape(ws: Workspace, got) -> None:
    """Nothing was written outside the runs dir (beside or above the workspace)."""
    for p in (ws.root / "x", ws.root.parent / "x", ws.root / "runs" / ".." / ".." / "x", ws.root / "runs" / "a"):
        assert not p.exists(), f"{p} was written"


RUN = ("run", "{cfg}")
CASES = [
    Case("config-missing", "config", "Run a config file that does not exist",
         "Names the missing file", argv=("run", "{ws}/nope.yaml"), expect_in_error="nope.yaml"),
    Case("config-yaml-syntax", "config", "Config with a YAML syntax error (unclosed bracket)",
         "Names the file and the line", argv=RUN, setup=_write_cfg("name: smoke\ndata: {root: [x\n"),
         expect_in_error="smoke.yaml"),
    Case("config-not-utf8", "config", "Config file that is not UTF-8 (Latin-1 bytes)",
         "Names the file and says it is not UTF-8", argv=RUN, setup=_write_cfg(b"name: caf\xe9\n"),
         expect_in_error="smoke.yaml"),
    Case("config-not-a-mapping", "config", "Config whose top level is a list",
         "Names the file: a config is a mapping", argv=RUN, setup=_write_cfg("- a\n- b\n"), expect_in_error="smoke.yaml"),
    Case("config-unknown-key", "config", "Unknown key `training.lrr`",
         "Names the key's path", argv=RUN, setup=_edit("training.lrr", 0.1), expect_in_error="lrr"),
    Case("config-wrong-type", "config", "`training.tasks: many`",
         "Names the field and what it expects", argv=RUN, setup=_edit("training.tasks", "many"), expect_in_error="tasks"),
    Case("config-negative", "config", "`episodes.way: 0`",
         "Names the field and its bound", argv=RUN, setup=_edit("episodes.way", 0), expect_in_error="way"),
    Case("override-bad-value", "config", "`--set training.tasks=abc`",
         "Names the field", argv=(*RUN, "--set", "training.tasks=abc"), expect_in_error="tasks"),
    Case("override-no-equals", "config", "`--set training.tasks` (no `=`)",
         "Says overrides are KEY=VALUE", argv=(*RUN, "--set", "training.tasks"), expect_in_error="training.tasks"),
    Case("override-unknown-key", "config", "`--set data.nosuch=1`",
         "Names the key's path", argv=(*RUN, "--set", "data.nosuch=1"), expect_in_error="nosuch"),
    Case("plugin-unknown-name", "config", "`student.backbone.name: nosuchnet`",
         "Names the plugin and lists the registered ones", argv=RUN, setup=_edit("student.backbone.name", "nosuchnet"),
         expect_in_error="nosuchnet", forbid_new=NOTHING_STARTED),
    Case("plugin-bad-option", "config", "A head option the plugin does not have (`bogus: 1`)",
         "Names the option and the plugin", argv=RUN, setup=_edit("student.head.options", {"temporal_set": [2], "bogus": 1}),
         expect_in_error="bogus", forbid_new=NOTHING_STARTED),
    Case("mfm-without-modalities", "config", "`modalities.names=[rgb]` with the MFM fusion (needs several modalities)",
         "Fails before any stage starts (today it trained four stages, then failed at fuse)",
         argv=(*RUN, "--set", "modalities.names=[rgb]"), expect_in_error="modalities", forbid_new=NOTHING_STARTED),
    Case("mfm-without-modalities-dry-run", "config", "The same, with `mkd submit --dry-run`",
         "Refused by the dry run, nothing queued or recorded",
         argv=("submit", "{cfg}", "--dry-run", "--set", "modalities.names=[rgb]"), expect_in_error="modalities",
         forbid_new=("runs/jobs/*",)),
    Case("student-pretrained-missing", "config", "`student.pretrained` names a file that does not exist",
         "Fails before any stage starts, naming the file",
         argv=(*RUN, "--set", "student.pretrained={ws}/weights/missing.pt"), expect_in_error="missing.pt",
         forbid_new=NOTHING_STARTED),
    Case("teacher-pretrained-missing-dry-run", "config", "`teacher.pretrained.rgb` missing, with `mkd submit --dry-run`",
         "Refused by the dry run, naming the file",
         argv=("submit", "{cfg}", "--dry-run", "--set", "teacher.pretrained={{rgb: {ws}/weights/gone.pt}}"),
         expect_in_error="gone.pt", forbid_new=("runs/jobs/*",)),
    Case("submit-no-redis", "config", "`mkd submit` with no Redis listening",
         "Exit 3, says how to start Redis; no job is recorded", argv=("submit", "{cfg}"), expect_exit=3,
         expect_in_error="redis", forbid_new=("runs/jobs/*",)),
    # ------------------------------------------------------------------ names
    Case("name-traversal", "names", "`name: ../../x` (the report folder would leave runs/)",
         "Refuses the name; nothing is written outside runs/", argv=(*RUN, "--set", "name=../../x"),
         expect_in_error="../../x", forbid_new=NOTHING_STARTED, check=_no_escape),
    Case("name-absolute", "names", "`name: /tmp/x`", "Refuses the name",
         argv=(*RUN, "--set", "name=/tmp/x"), expect_in_error="/tmp/x", forbid_new=NOTHING_STARTED),
    Case("name-separator", "names", "`name: a/b`", "Refuses the name",
         argv=(*RUN, "--set", "name=a/b"), expect_in_error="a/b", forbid_new=NOTHING_STARTED, check=_no_escape),
    Case("name-dots", "names", "`name: ..`", "Refuses the name",
         argv=(*RUN, "--set", "name=.."), expect_in_error="..", forbid_new=NOTHING_STARTED),
    Case("name-traversal-submit", "names", "`mkd submit --dry-run --set name=../x`",
         "Refuses the experiment name", argv=("submit", "{cfg}", "--dry-run", "--set", "name=../x"), expect_in_error="../x",
         forbid_new=("runs/jobs/*",)),
    Case("stage-name-traversal", "names", "`mkd run --stages ../../x`",
         "Refuses the stage name", argv=(*RUN, "--stages", "../../x"), expect_in_error="../../x",
         forbid_new=NOTHING_STARTED),
    Case("stage-name-unknown", "names", "`mkd run --stages teacher:nosuch`",
         "Names the stage and how to list them", argv=(*RUN, "--stages", "teacher:nosuch"), expect_in_error="teacher:nosuch",
         forbid_new=NOTHING_STARTED),
    Case("config-ok-control", "config", "A finished experiment run again (control row)",
         "Skips every stage, prints the results table; nothing changes", argv=RUN, expect_exit=0,
         protected=FINISHED),
]
