"""Worker layout without a broker: one pinned worker per GPU, no torch in the parent."""

from __future__ import annotations

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
