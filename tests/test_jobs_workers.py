"""Worker layout without a broker: one pinned worker per GPU, no torch in the parent."""

from __future__ import annotations

import os
import subprocess
import sys

from mkdcore.cli.worker_cmd import celery_argv, worker_specs
from workers.gpu import NO_GPU, count_gpus, gpu_stats


def test_one_pinned_worker_per_gpu_with_unique_names_and_queues():
    specs = worker_specs("0,1", cpu=False, queue="mkd", name="box")
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1"]
    assert len({s["node"] for s in specs}) == 2 and specs[0]["node"].startswith("box-gpu0@")
    assert all(s["queues"].split(",")[0] == "mkd" for s in specs) and specs[0]["queues"] != specs[1]["queues"]
    argv = celery_argv(specs[0], "INFO")
    assert argv[argv.index("-c") + 1] == "1" and argv[argv.index("--prefetch-multiplier") + 1] == "1"


def test_no_gpu_means_one_cpu_worker_and_clean_stats():
    if count_gpus() == 0:
        specs = worker_specs(None, cpu=False, queue="mkd", name=None)
        assert len(specs) == 1 and specs[0]["env"]["CUDA_VISIBLE_DEVICES"] == "" and specs[0]["node"].startswith("mkd-cpu@")
        assert NO_GPU in gpu_stats(0)["detail"]
    assert gpu_stats(None) == {"gpu": None, "detail": "CPU worker"}


def test_worker_parent_never_imports_torch():
    """CUDA must not be initialised before Celery forks: torch is not even imported."""
    code = ("import sys; import mkdcore.cli.worker_cmd, workers.celery_app, workers.tasks, workers.heartbeat, workers.gpu;"
            "from mkdcore.cli.worker_cmd import worker_specs; worker_specs(None, False, 'mkd', None);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_celery_settings_close_the_known_traps():
    from workers.celery_app import VISIBILITY_TIMEOUT_S, make_app

    conf = make_app("redis://:pw@127.0.0.1:1/0").conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1 and conf.task_track_started
    assert conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT_S >= 7 * 24 * 3600
    assert conf.task_reject_on_worker_lost is False  # no uncapped re-queue loop; mkd's watchdog caps attempts


def test_supervisor_restarts_a_crashed_worker_with_backoff_until_it_stops_cleanly(tmp_path, capsys):
    """`mkd worker` restarts a worker that dies (here: exit code 1, twice), not one that exits 0."""
    from mkdcore.cli.worker_cmd import Supervisor

    starts = tmp_path / "starts"
    child = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() else 'x');"
             "sys.exit(1 if len(p.read_text()) < 3 else 0)")
    sup = Supervisor([[sys.executable, "-c", child, str(starts)]], [dict(os.environ)], ["w-cpu@h"], backoff=(0.05, 0.1))
    assert sup.run() == 0
    assert starts.read_text() == "xxx"  # two crashes, two restarts, then a clean exit
    err = capsys.readouterr().err
    assert err.count("worker w-cpu@h died (exit code 1)") == 2 and "restarting in 0 s" in err
    assert "stopped cleanly (exit code 0); not restarted" in err


def test_supervisor_does_not_restart_after_a_stop_signal(tmp_path):
    import signal

    from mkdcore.cli.worker_cmd import Supervisor

    ready = tmp_path / "ready"
    child = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(3));"
             "pathlib.Path(sys.argv[1]).write_text('up'); time.sleep(60)")
    sup = Supervisor([[sys.executable, "-c", child, str(ready)]], [dict(os.environ)], ["w"], backoff=(0.05, 0.1))
    import threading

    def stop_when_ready():
        while not ready.exists():
            threading.Event().wait(0.05)
        sup.stop(signal.SIGTERM)

    threading.Thread(target=stop_when_ready, daemon=True).start()
    assert sup.run() == 3  # the worker's own exit code; not restarted although it was not 0
    assert ready.read_text() == "up"
