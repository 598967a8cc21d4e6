"""Speed settings (mkdcore/speed.py) and the plain-vs-mkd comparison harness."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mkdcore import speed
from mkdcore.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_measured_ones():
    cfg = ExperimentConfig()
    assert cfg.runtime.malloc == "tuned" and cfg.runtime.channels_last == "auto" and cfg.runtime.compile is False
    assert cfg.training.amp == "auto"


@pytest.mark.parametrize("amp,device,expected", [
    ("auto", "cuda", torch.bfloat16), ("auto", "cpu", None), ("none", "cuda", None), ("none", "cpu", None),
    ("fp16", "cuda", torch.float16), ("bf16", "cuda", torch.bfloat16), ("fp16", "cpu", None),
])
def test_autocast_dtype(amp, device, expected):
    assert speed.amp_dtype(amp, torch.device(device)) is expected


def test_cpu_bf16_only_for_models_where_it_pays():
    """ResNets (dense convolutions) train in bf16 on a CPU with native bf16; MobileNets
    (depthwise) and conv-free models stay fp32; without native bf16, never."""
    from mkdcore import api

    native = speed.cpu_has_native_bf16()
    cpu = torch.device("cpu")
    resnet = api.create("backbone", "resnet18", projection="none")
    mobilenet = api.create("backbone", "mobilenetv3_small", projection="none")
    assert speed.amp_dtype("auto", cpu, resnet) is (torch.bfloat16 if native else None)
    assert speed.amp_dtype("auto", cpu, mobilenet) is None
    assert speed.amp_dtype("auto", cpu, torch.nn.Linear(4, 4)) is None
    assert speed.amp_dtype("none", cpu, resnet) is None
    assert speed.amp_dtype("bf16", cpu, mobilenet) is (torch.bfloat16 if native else None)


def test_channels_last_auto_and_explicit():
    assert speed.wants_channels_last("auto", torch.device("cpu"))
    assert speed.wants_channels_last("auto", torch.device("cuda"))
    assert not speed.wants_channels_last(False, torch.device("cuda"))


def test_prepare_model_keeps_state_dict_keys_and_outputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    keys = list(model.state_dict())
    same = speed.prepare_model(model, channels_last=True, compile=False)
    assert same is model and list(model.state_dict()) == keys
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x), before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_allocator_takes_effect_in_a_fresh_process():
    import subprocess

    code = "from mkdcore import speed; print(speed.tune_allocator('tuned'), speed.tune_allocator('default'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["True", "False"]


def test_plain_vs_mkd_comparison_runs_both_sides_on_the_same_tasks(tmp_path):
    """The harness behind ``bench_student.py --compare plain`` and ``gpu_check.sh``, at a
    tiny size: both sides train the same tasks and report the settings that differ."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare_plain
    import gpu_check

    tiny = sum((["--set", s] for s in gpu_check.TINY), [])  # gpu_check --cpu's 2-way 1-shot tasks on 24 videos
    results = compare_plain.main(["--backbones", "mobilenetv3_small", "--sizes", "32", "--warmup", "0", "--tasks", "1",
                                  "--threads", "1", "--scratch", str(tmp_path), *tiny, "--out", str(tmp_path / "r.json")])
    (res,) = results
    for side in ("plain", "mkd"):
        assert res[side]["s_per_task_wall"] > 0 and res[side]["peak_rss_mib"] > 0
    assert res["differs"]["malloc"] == {"plain": "default", "mkd": "tuned"}
    assert res["differs"]["channels_last"] == {"plain": "False", "mkd": "True"}
    # same weights, same episode, same loss: the sides differ in settings only
    assert res["plain"]["first_loss"] == pytest.approx(res["mkd"]["first_loss"], rel=1e-3)
    assert (tmp_path / "r.json").is_file()


def test_gpu_check_script_runs_in_cpu_mode(tmp_path):
    """``benchmarks/gpu_check.sh --cpu``: the GPU check's code path at tiny sizes, so the
    script is known to work before a GPU machine is at hand."""
    import json
    import subprocess

    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--models", "student", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tasks/s plain" in out.stdout and "gpu_check done" in out.stdout
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    (run,) = res["runs"]
    assert run["train_tflop_per_task"] > 0 and run["mkd"]["tasks_per_s"] > 0 and run["mkd"]["mfu"] is None  # no peak on CPU
    # gpu_decode_check.py ran as a process of its own (at tiny sizes) and its lines were kept
    decode = res["decode"].splitlines()
    cpu_line = next(line for line in decode if line.startswith("cpu decode:"))
    assert float(cpu_line.split()[2]) > 0 and "1 episodes of 16 frames, 48 px" in cpu_line
    assert torch.cuda.is_available() or decode[-1].startswith("no CUDA")
