"""Workers that own one or more GPUs: layout, routing by device count, NVML in status.

NVML is replaced at its boundary only (the ``pynvml`` module): everything between it and
``mkd status --json`` (heartbeat, files, status rows, the CLI) is the real code.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mkdcore.cli.worker_cmd import worker_specs
from mkdcore.errors import MkdError
from mkdcore.testing import run_cli
from tests.redis_fixtures import REPO, queue, redis_server, wait_for  # noqa: F401


# ------------------------------------------------------------------ layout
def test_gpus_grouped_per_worker_see_their_gpus_and_consume_the_queues_they_can_serve(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("mkdcore.cli.worker_cmd.cpu_cores", lambda: 16)
    specs = worker_specs("0,1,2,3", cpu=False, queue="mkd", name="box", devices_per_worker=2)
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0,1", "2,3"]
    assert [s["node"].split("@")[0] for s in specs] == ["box-gpu0-1", "box-gpu2-3"]
    host = socket.gethostname()
    assert specs[0]["queues"].split(",") == ["mkd", "mkd.devices2", f"mkd.{host}.gpu0-1"]
    assert [s["env"]["OMP_NUM_THREADS"] for s in specs] == ["8", "8"]  # 16 cores over 2 workers
    single = worker_specs("0,1", cpu=False, queue="mkd", name="box")
    assert [s["queues"].split(",")[:-1] for s in single] == [["mkd"], ["mkd"]]  # 1-device workers: no .devicesN
    with pytest.raises(MkdError, match="do not split into workers of 2"):
        worker_specs("0,1,2", cpu=False, queue="mkd", name=None, devices_per_worker=2)


def test_cpu_workers_split_the_cores_and_a_set_thread_count_wins(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("mkdcore.cli.worker_cmd.cpu_cores", lambda: 8)
    specs = worker_specs(None, cpu=True, queue="mkd", name="c", cpu_workers=4)
    assert [s["node"].split("@")[0] for s in specs] == ["c-cpu0", "c-cpu1", "c-cpu2", "c-cpu3"]
    assert {s["env"]["OMP_NUM_THREADS"] for s in specs} == {"2"} and {s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs} == {""}
    assert worker_specs(None, cpu=True, queue="mkd", name="c", threads=3)[0]["env"]["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own setting is kept
    assert "OMP_NUM_THREADS" not in worker_specs(None, cpu=True, queue="mkd", name="c")[0]["env"]


# ----------------------------------------------------------------- routing
class FakeApp:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_task(self, name, kwargs, queue, **options):
        self.sent.append((kwargs["stage"], queue))


def test_a_stage_asking_for_n_devices_goes_to_the_queue_of_n_device_workers():
    from mkdcore.jobs.capacity import queues_of_worker
    from mkdcore.jobs.messages import make_sender
    from mkdcore.jobs.model import JobRecord, StageRecord

    stages = [StageRecord(name=n, kind=k, key=n, stage_dir="/x", token="t") for n, k in
              [("derive:flow", "derive"), ("teacher:rgb", "teacher"), ("student:lite-mkd", "student"), ("report", "report")]]
    job = JobRecord(id="j1", name="j", config_hash="h", config_file="/nope", cwd="/", runs_dir="/r", stages=stages)
    app = FakeApp()
    send = make_sender(app, {"j1": {"runtime": {"devices": 2}}})
    for s in stages:
        send(job, s)
    assert app.sent == [("derive:flow", "mkd"), ("teacher:rgb", "mkd.devices2"), ("student:lite-mkd", "mkd.devices2"),
                        ("report", "mkd")]
    assert [s.devices for s in stages] == [1, 2, 2, 1]
    assert "mkd.devices2" in queues_of_worker("mkd", 2) and "mkd.devices2" not in queues_of_worker("mkd", 1)


# ------------------------------------------------------------ NVML status
def _fake_pynvml(gpus: dict[int, tuple[str, int, int, int]] | None) -> types.ModuleType:
    """A ``pynvml`` stand-in: ``gpus`` index -> (name, used bytes, total bytes, util %);
    None: no driver (every call raises NVMLError, as on this machine's CI)."""
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        if gpus is None:
            raise NVMLError("NVML Shared Library Not Found")

    nv.NVMLError = NVMLError
    nv.nvmlInit = init
    nv.nvmlDeviceGetCount = lambda: len(gpus or {})
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetName = lambda h: gpus[h][0].encode()
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=gpus[h][1], total=gpus[h][2])
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=gpus[h][3], memory=0)
    return nv


def _status_json(runs: Path, monkeypatch) -> dict:
    monkeypatch.setenv("MKD_BROKER_URL", "redis://127.0.0.1:1/0")  # queue depth: unreachable, at once
    code, out, err = run_cli("status", "--json", "--runs-dir", runs)
    assert code == 0, err
    return json.loads(out)


def test_status_json_has_each_workers_gpus_with_utilisation_and_memory(tmp_path, monkeypatch):
    from workers.heartbeat import write_beat

    gib = 2**30
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml({0: ("NVIDIA H100", 3 * gib, 80 * gib, 97),
                                                               1: ("NVIDIA H100", 1 * gib, 80 * gib, 12)}))
    monkeypatch.setenv("MKD_WORKER_GPU", "0,1")
    write_beat("box-gpu0-1@h", tmp_path)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(None))  # a node without a driver
    monkeypatch.setenv("MKD_WORKER_GPU", "2")
    write_beat("bare-gpu2@h", tmp_path)
    monkeypatch.setenv("MKD_WORKER_GPU", "")
    write_beat("cpu-cpu@h", tmp_path)
    rows = {w["node"]: w for w in _status_json(tmp_path, monkeypatch)["workers"]}
    assert rows["box-gpu0-1@h"]["devices"] == 2 and rows["box-gpu0-1@h"]["gpus"] == [
        {"index": 0, "name": "NVIDIA H100", "utilization_pct": 97, "memory_used_mib": 3072, "memory_total_mib": 81920},
        {"index": 1, "name": "NVIDIA H100", "utilization_pct": 12, "memory_used_mib": 1024, "memory_total_mib": 81920},
    ]
    bare = rows["bare-gpu2@h"]["gpus"]
    assert len(bare) == 1 and {bare[0][k] for k in ("name", "utilization_pct", "memory_used_mib", "memory_total_mib")} == {"n/a"}
    assert "no NVIDIA driver/GPU" in bare[0]["detail"]
    assert rows["cpu-cpu@h"]["gpus"] == [] and rows["cpu-cpu@h"]["devices"] == 1
    code, out, err = run_cli("status", "--runs-dir", tmp_path)
    assert code == 0, err
    assert "0 NVIDIA H100 97% 3072/81920 MiB" in out and "1 NVIDIA H100 12% 1024/81920 MiB" in out
    assert "2 n/a" in out


def test_status_shows_names_verbatim_and_tries_count_retries(tmp_path, monkeypatch):
    from mkdcore.jobs.model import JobRecord, StageRecord
    from mkdcore.jobs.store import JobStore

    clean = [StageRecord(name=f"s{i}", kind="report", key=f"k{i}", stage_dir="/x", state="succeeded", attempts=1)
             for i in range(12)]
    retried = [StageRecord(name="teacher:rgb", kind="teacher", key="t", stage_dir="/x", state="succeeded", attempts=2),
               StageRecord(name="student", kind="student", key="s", stage_dir="/x", state="succeeded", attempts=1, preempted=3)]
    store = JobStore(tmp_path)
    with store.transaction() as tx:
        tx.add(JobRecord(id="j1-clean", name="smoke[seed=1]", group="g[x]", config_hash="a", config_file="/c", cwd="/",
                         runs_dir=str(tmp_path), stages=clean, created_at=1))
        tx.add(JobRecord(id="j2-retried", name="smoke[seed=2]", config_hash="b", config_file="/c", cwd="/",
                         runs_dir=str(tmp_path), stages=retried, created_at=2))
    jobs = {j["id"]: j for j in _status_json(tmp_path, monkeypatch)["jobs"]}
    assert jobs["j1-clean"]["retries"] == 0 and jobs["j1-clean"]["attempts"] == 12  # a clean 12-stage job: 0 tries
    assert jobs["j2-retried"]["retries"] == 1 and jobs["j2-retried"]["preemptions"] == 3  # preemption costs no try
    code, out, err = run_cli("status", "--runs-dir", tmp_path)
    assert code == 0, err
    assert "smoke[seed=1]" in out and "smoke[seed=2]" in out and "g[x]" in out
    row = next(line for line in out.splitlines() if "smoke[seed=1]" in line)
    assert row.rstrip(" │|").split()[-1] == "0"


@pytest.mark.integration
def test_a_two_device_stage_waits_for_a_two_device_worker_and_runs_there(queue):  # noqa: F811
    """Real workers: the 1-device worker never takes the 2-device teacher; it waits on
    ``mkd.devices2`` until a worker owning 2 devices comes up and runs it."""
    from mkdcore.jobs.status import queue_depth

    q = queue
    one = q.start_worker("one")
    assert one.poll() is None
    import yaml

    cfg = q.config()
    data = yaml.safe_load(cfg.read_text())
    data["runtime"]["devices"] = 2  # q.config() sets runtime itself
    cfg.write_text(yaml.safe_dump(data))
    job = q.submit(cfg)[0]
    stage = lambda name: q.store().load(job.id).stage(name)  # noqa: E731
    wait_for(lambda: stage("teacher:rgb").state == "queued", 90, "the teacher to be queued after the data stage")
    assert stage("data").worker.startswith("one-") and stage("teacher:rgb").devices == 2
    wait_for(lambda: queue_depth(q.server.url, ["mkd.devices2"]) == {"mkd.devices2": 1}, 30,
             "the teacher's message on mkd.devices2")
    log = open(q.root / "worker-two.log", "ab")
    two = subprocess.Popen([sys.executable, "-m", "mkdcore.cli.main", "worker", "--cpu", "--devices-per-worker", "2",
                            "--name", "two"], cwd=REPO, env=q.env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    q.workers.append(two)
    wait_for(lambda: stage("teacher:rgb").state == "succeeded", 120, "the teacher to run on worker two")
    assert stage("teacher:rgb").worker.startswith("two-")
    assert "teacher:rgb" not in q.worker_log("one")
