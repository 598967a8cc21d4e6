"""Names users type never become paths outside mkd's folders (issue 10).

Unit tests of :mod:`mkdcore.names`, then the places each name enters mkd: config
``name``/``group``, sweep labels, job ids of status/cancel/retry/logs, ``--stages`` and
``--force``, queue messages; the CLI ones are checked as users see them (one ``error:``
line, exit 2, nothing written outside the run directory).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mkdcore import names
from mkdcore.config import config_from_dict
from mkdcore.errors import ConfigError
from mkdcore.jobs.model import JobRecord, StageRecord
from mkdcore.jobs.store import JobStore
from mkdcore.stages.base import StageNode
from mkdcore.stages.dag import select
from mkdcore.stages.runner import forced_closure
from mkdcore.testing import run_cli

BAD = ["../../x", "..", "/etc", "a/b", ".hidden", "", "j*", "a\\b", "x" * 200]


# ------------------------------------------------------------------ names.py
@pytest.mark.parametrize("value", BAD + [None, 3])
def test_experiment_name_refuses_paths(value):
    with pytest.raises(names.UnsafeNameError, match="not allowed"):
        names.experiment_name(value)


@pytest.mark.parametrize("value", ["smoke", "quickstart", "lr_0.001", "exp-1+2", "A.b"])
def test_experiment_name_accepts_plain_names(value):
    assert names.experiment_name(value) == value


@pytest.mark.parametrize("value", ["../../../x", "j*", "/etc", "", "-x", "j 1", "a/b"])
def test_job_id_refuses_paths_and_patterns(value):
    with pytest.raises(names.UnsafeNameError, match="job id"):
        names.job_id(value)


def test_job_id_accepts_generated_ids_and_prefixes():
    from mkdcore.jobs.model import new_job_id

    for value in (new_job_id(), "j2501", "g250101-120000-abcdef"):
        assert names.job_id(value) == value


@pytest.mark.parametrize("value", ["teacher:../x", "../teacher", "teacher/rgb", "Teacher", "teacher:", "a:b:c", "teacher:.."])
def test_stage_name_refuses(value):
    with pytest.raises(names.UnsafeNameError, match="stage name"):
        names.stage_name(value)


def test_split_stage_name():
    assert names.split_stage_name("teacher:rgb") == ("teacher", "rgb")
    assert names.split_stage_name("student:lite-mkd") == ("student", "lite-mkd")
    assert names.split_stage_name("report") == ("report", None)
    with pytest.raises(names.UnsafeNameError):
        names.split_stage_name("teacher:a/b")


@pytest.mark.parametrize("value", ["..", ".", ".tmp", "a/b", "a\\b", "a\x00b", ""])
def test_folder_names_refuse_separators(value):
    with pytest.raises(names.UnsafeNameError):
        names.class_name(value)


def test_folder_names_allow_spaces_and_punctuation():
    assert names.video_name("v_Apply Eye-Makeup (1)") == "v_Apply Eye-Makeup (1)"


def test_inside_and_safe_join(tmp_path):
    assert names.inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(names.UnsafeNameError, match="leaves"):
        names.inside(tmp_path / "runs", tmp_path / "runs" / ".." / "x")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path)  # a symlink out of the root is outside
    with pytest.raises(names.UnsafeNameError):
        names.inside(tmp_path / "runs", tmp_path / "runs" / "link" / "x")
    assert names.safe_join(tmp_path, "cls", "vid") == tmp_path / "cls" / "vid"
    with pytest.raises(names.UnsafeNameError):
        names.safe_join(tmp_path, "..", "x")


@pytest.mark.parametrize("label,expected", [("lr=0.001", "exp-lr_0.001"), ("x=a/b", "exp-x_a_b"),
                                            ("x=..", "exp-x"), ("x=../../etc", "exp-x_etc")])
def test_sweep_member_names_are_sanitised(label, expected):
    assert names.sweep_member_name("exp", label) == expected


def test_sweep_member_name_refuses_what_cannot_be_sanitised():
    with pytest.raises(names.UnsafeNameError, match="sweep label"):
        names.sweep_member_name("exp", "x=" + "y" * 200)


# -------------------------------------------------------------- where they enter
@pytest.mark.parametrize("field", ["name", "group"])
def test_config_name_and_group_are_validated_naming_field_and_file(field):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({field: "../../x"}, "exp.yaml", check_plugins=False)
    msg = str(exc.value)
    assert msg.startswith(f"exp.yaml: {field}: ") and "'../../x'" in msg and "\n" not in msg


def test_sweep_with_slash_in_value_reports_into_a_folder_under_runs(tmp_path):
    from mkdcore.jobs.submit import Member, build_job

    cfg = config_from_dict({"name": "exp", "runtime": {"runs_dir": str(tmp_path / "runs")}}, check_plugins=False)
    job, resolved = build_job(Member("x=../../a/b", {}, cfg), name=None, group="g1", priority=5, queue="mkd",
                              code=None, grace_s=1.0, max_attempts=1)
    assert resolved["name"] == "exp-x_a_b"
    names.inside(tmp_path / "runs", tmp_path / "runs" / resolved["name"])


def _nodes() -> list[StageNode]:
    return [StageNode("data", "data", "k0"), StageNode("teacher:rgb", "teacher", "k1", deps=["data"])]


@pytest.mark.parametrize("bad", ["../x", "teacher:../../x", "/etc"])
def test_stages_and_force_are_validated(bad):
    with pytest.raises(names.UnsafeNameError):
        select(_nodes(), [bad])
    with pytest.raises(names.UnsafeNameError):
        forced_closure(_nodes(), [bad])
    assert [n.name for n in select(_nodes(), ["teacher"])] == ["data", "teacher:rgb"]


def test_queue_message_with_unsafe_job_id_or_stage_is_rejected():
    from workers.tasks import validate_message

    good = {"job_id": "j1", "stage": "data", "token": "t", "runs_dir": "/tmp/r", "config_hash": "h", "config": {}}
    assert not isinstance(validate_message((), good), str)
    for field, bad in (("job_id", "../../x"), ("stage", "teacher:../../x")):
        why = validate_message((), {**good, field: bad})
        assert isinstance(why, str) and "not allowed" in why


# ----------------------------------------------------------------------- CLI
def one_error_line(result: tuple[int, str, str]) -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (code, err)
    return lines[0]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_with_name_outside_runs_fails_with_one_line(tmp_path, monkeypatch, capsys):
    work = tmp_path / "w" / "d"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    config = work / "exp.yaml"
    config.write_text("name: ../../x\ndata: {root: nowhere}\n")
    msg = one_error_line(run_cli("run", str(config), "--set", "runtime.device=cpu"))
    assert str(config) in msg and "name" in msg and "'../../x'" in msg
    assert files_under(tmp_path) == {"w/d/exp.yaml": config.read_bytes()}


@pytest.fixture
def store_env(tmp_path, monkeypatch):
    """A run directory at ``tmp/w/runs`` with one job, and a job record planted at
    ``tmp/x/job.json``, where ``runs/jobs/../../../x`` leads."""
    runs = tmp_path / "w" / "runs"
    monkeypatch.setenv("MKD_RUNS_DIR", str(runs))
    runs.mkdir(parents=True)
    monkeypatch.chdir(runs.parent)
    store = JobStore(runs)
    stage = StageRecord(name="data", kind="data", key="k", stage_dir=str(runs / "stages" / "data" / "k"))
    store.save(JobRecord(id="jinside", name="inside", config_hash="h", config_file="-", cwd=str(tmp_path),
                         runs_dir=str(runs), stages=[stage]))
    planted = tmp_path / "x" / "job.json"
    planted.parent.mkdir()
    planted.write_text(JobRecord(id="x", name="planted", config_hash="h", config_file="-", cwd=str(tmp_path),
                                 runs_dir=str(runs), stages=[stage]).model_dump_json())
    return tmp_path


@pytest.mark.parametrize("args", [("status", "../../../x"), ("status", "j*"), ("status", "/etc"),
                                  ("cancel", "../../../x", "--no-wait"), ("retry", "../../../x"), ("logs", "../../../x")])
def test_job_commands_refuse_paths_and_patterns(store_env, capsys, args):
    before = files_under(store_env)
    msg = one_error_line(run_cli(*args))
    assert "job id" in msg and repr(args[1]) in msg
    assert files_under(store_env) == before  # nothing read as a job, nothing written


def test_job_id_prefix_still_resolves(store_env, capsys):
    code, out, err = run_cli("status", "jins", "--json")
    assert code == 0 and '"id": "jinside"' in out, err


def test_submit_name_is_validated(tmp_path):
    from mkdcore.jobs.submit import Member, build_job

    cfg = config_from_dict({"runtime": {"runs_dir": str(tmp_path / "runs")}}, check_plugins=False)
    with pytest.raises(names.UnsafeNameError, match="job name"):
        build_job(Member("", {}, cfg), name="../x", group=None, priority=5, queue="mkd", code=None, grace_s=1.0,
                  max_attempts=1)
