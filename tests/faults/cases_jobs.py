"""Job records, job ids typed by users, and stage messages a worker receives.

Job records are files (``runs/jobs/<id>/job.json``); Redis only carries messages.
Anything that can write to either must not be able to crash a command or a worker, or
make mkd read or write outside the run directory.
"""

from __future__ import annotations

import json
import shutil

from tests.faults.table import FINISHED, Case
from tests.faults.workspace import Outcome, Workspace

OUTSIDE = (*FINISHED, "x/**")
RD = ("--runs-dir", "{runs}")


def _job_json(how: str):
    def setup(ws: Workspace) -> None:
        path = ws.runs / "jobs" / ws.job / "job.json"
        if how == "schema":
            ws.write(path, json.dumps({"id": 1, "stages": "none"}))
        else:
            ws.corrupt(path, how)
    return setup


def _outside_record(ws: Workspace) -> None:
    """A valid job record at <ws>/x/job.json, which `../../x` would reach from runs/jobs."""
    (ws.root / "x").mkdir()
    shutil.copy(ws.runs / "jobs" / ws.job / "job.json", ws.root / "x" / "job.json")


# ------------------------------------------------------------------ messages
def _message(ws: Workspace, **changes) -> dict:
    """A well-formed stage message for the template job's queued stage, with ``changes``."""
    record = json.loads((ws.runs / "jobs" / ws.job / "job.json").read_text())
    stage = next(s for s in record["stages"] if s["state"] == "queued")
    import yaml

    msg = {"job_id": record["id"], "stage": stage["name"], "token": stage["token"], "runs_dir": str(ws.runs),
           "config_hash": record["config_hash"], "config": yaml.safe_load(open(record["config_file"]))}
    msg.update(changes)
    return msg


def _deliver(args: tuple = (), **changes):
    """Run the worker's task body on a message, as a worker would; no broker is touched."""
    def call(ws: Workspace) -> Outcome:
        from workers.tasks import StageRun, validate_message

        kwargs = {} if changes.get("_empty") else _message(ws, **{k: v for k, v in changes.items() if k != "_empty"})
        msg = validate_message(args, kwargs)
        if isinstance(msg, str):
            return Outcome(0, extra={"outcome": "rejected", "reason": msg})
        return Outcome(0, extra=StageRun(msg, "fault-node", None).run())
    return call


def _not_run(ws: Workspace, got: Outcome) -> None:
    assert got.extra["outcome"] in ("rejected", "dropped"), got.extra
    # (a planted record at <ws>/x is protected: its checksum shows it was not written)
    assert not (ws.runs / "workers").exists(), "the message got as far as announcing a task on this node"


def _msg(id_: str, title: str, behaviour: str, call, setup=None, protected=FINISHED) -> Case:
    return Case(id_, "messages", title, behaviour, mode="call", call=call, expect_exit=0, check=_not_run, setup=setup,
                protected=protected)


CASES = [
    # ------------------------------------------------------------ job records
    Case("job-json-garbage-status", "job records", "`job.json` overwritten with junk, `mkd status JOB`",
         "Names job.json and the remedy", argv=("status", "{job}", *RD), setup=_job_json("garbage"), expect_in_error="job.json"),
    Case("job-json-not-utf8-status", "job records", "`job.json` with Latin-1 bytes, `mkd status JOB`",
         "Names job.json", argv=("status", "{job}", *RD), setup=_job_json("latin1"), expect_in_error="job.json"),
    Case("job-json-schema-status", "job records", "`job.json` valid JSON of the wrong shape, `mkd status JOB`",
         "Names job.json", argv=("status", "{job}", *RD), setup=_job_json("schema"), expect_in_error="job.json"),
    Case("job-json-garbage-list", "job records", "`job.json` junk, `mkd status` (all jobs)",
         "Lists the other jobs and skips the unreadable one; exit 0", argv=("status", *RD), setup=_job_json("garbage"),
         expect_exit=0),
    Case("job-json-truncated-cancel", "job records", "`job.json` cut in half, `mkd cancel JOB`",
         "Names job.json; writes nothing", argv=("cancel", "{job}", "--no-wait", *RD), setup=_job_json("truncate"),
         expect_in_error="job.json"),
    Case("job-json-garbage-retry", "job records", "`job.json` junk, `mkd retry JOB` (no Redis)",
         "One line (Redis is checked before the record is read); writes nothing", argv=("retry", "{job}", *RD),
         setup=_job_json("garbage"), expect_exit=3),
    Case("job-json-garbage-logs", "job records", "`job.json` junk, `mkd logs JOB`",
         "Names job.json", argv=("logs", "{job}", *RD), setup=_job_json("garbage"), expect_in_error="job.json"),
    Case("job-unknown", "job records", "`mkd status jnosuch`", "Says there is no such job and where it looked",
         argv=("status", "jnosuch", *RD), expect_in_error="jnosuch"),
    # ------------------------------------------------------------------ names
    Case("jobid-traversal-status", "names", "`mkd status ../../x` with a job record planted at `x/job.json`",
         "Refuses the id; reads nothing outside runs/jobs", argv=("status", "../../x", *RD), setup=_outside_record,
         expect_in_error="../../x", protected=OUTSIDE),
    Case("jobid-traversal-cancel", "names", "`mkd cancel ../../x` with a job record planted at `x/job.json`",
         "Refuses the id; the planted record is not written", argv=("cancel", "../../x", "--no-wait", *RD),
         setup=_outside_record, expect_in_error="../../x", protected=OUTSIDE),
    Case("jobid-traversal-retry", "names", "`mkd retry ../../x`", "Refuses the id",
         argv=("retry", "../../x", *RD), setup=_outside_record, expect_in_error="../../x", protected=OUTSIDE),
    Case("jobid-traversal-logs", "names", "`mkd logs ../../x`", "Refuses the id",
         argv=("logs", "../../x", *RD), setup=_outside_record, expect_in_error="../../x", protected=OUTSIDE),
    Case("jobid-glob", "names", "`mkd status 'j*'` (a glob as an id)", "Refuses the id (today: a traceback)",
         argv=("status", "j*", *RD), expect_in_error="j*"),
    Case("jobid-absolute", "names", "`mkd status /etc`", "Refuses the id (today: a traceback)",
         argv=("status", "/etc", *RD), expect_in_error="/etc"),
    # --------------------------------------------------------------- messages
    _msg("msg-positional", "A stage message with positional arguments", "Rejected and logged; nothing runs",
         _deliver(args=(1, 2))),
    _msg("msg-empty", "A stage message with no fields", "Rejected and logged; nothing runs", _deliver(_empty=True)),
    _msg("msg-extra-field", "A stage message with an unknown field", "Rejected; nothing runs", _deliver(evil="rm -rf /")),
    _msg("msg-bad-config", "A stage message whose config is invalid", "Rejected naming the field; nothing runs",
         _deliver(config={"training": {"tasks": "many"}})),
    _msg("msg-jobid-traversal", "A stage message with `job_id: ../../x` and a record planted there",
         "Rejected: the id is not a path; the planted record is untouched", _deliver(job_id="../../x"),
         setup=_outside_record, protected=OUTSIDE),
    _msg("msg-stage-traversal", "A stage message with `stage: ../../x`", "Rejected or dropped; nothing runs",
         _deliver(stage="../../x")),
    _msg("msg-stale-token", "A stage message with a stale lease token (a duplicate delivery)",
         "Dropped; the job record is unchanged", _deliver(token="stale")),
    _msg("msg-unknown-job", "A stage message for a job with no record", "Dropped; nothing runs", _deliver(job_id="jnosuch")),
    _msg("msg-config-hash", "A stage message whose config hash does not match the job", "Dropped; nothing runs",
         _deliver(config_hash="0" * 16)),
]
