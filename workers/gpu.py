"""GPU discovery and live stats without CUDA: NVML (pynvml) or nvidia-smi, never torch.

The worker parent must not initialise CUDA (children forked after that fail with
"Cannot re-initialize CUDA in forked subprocess"), so GPUs are counted and measured
through NVML only. On a machine without a driver every call answers cleanly
("no NVIDIA driver/GPU") instead of raising.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

NO_GPU = "no NVIDIA driver/GPU"


def _nvml():
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def count_gpus() -> int:
    """Number of NVIDIA GPUs visible to the driver (0 without one)."""
    try:
        nv = _nvml()
        return int(nv.nvmlDeviceGetCount())
    except Exception:  # NVMLError (no library/driver), ImportError
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def gpu_stats(index: int | None) -> dict[str, Any]:
    """Name, memory used/total (MiB) and utilisation (%) of one GPU, or why not."""
    if index is None:
        return {"gpu": None, "detail": "CPU worker"}
    try:
        nv = _nvml()
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = nv.nvmlDeviceGetName(handle)
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        util = nv.nvmlDeviceGetUtilizationRates(handle)
        return {
            "gpu": index,
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_used_mib": round(mem.used / 2**20),
            "memory_total_mib": round(mem.total / 2**20),
            "utilization_pct": int(util.gpu),
        }
    except ImportError:
        return {"gpu": index, "detail": "pynvml not installed"}
    except Exception as exc:  # pynvml.NVMLError and its subclasses
        return {"gpu": index, "detail": f"{NO_GPU} ({type(exc).__name__})"}
