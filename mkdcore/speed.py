"""Process- and model-level speed settings, applied from ``runtime`` (and ``training.amp``).

Each setting is a measured default, switchable in the config (``benchmarks/README.md``
has the numbers and the commands that produced them):

* ``runtime.malloc: tuned`` (default on Linux/glibc) sets glibc's allocator so that the
  large activation buffers of a training step are reused from the heap instead of being
  ``mmap``-ed and unmapped (and page-faulted back) on every step: ``environment.md``
  measured system time near 50% of a CPU step with glibc's defaults. The heap is bounded:
  memory above ``trim_mib`` at the top of the heap goes back to the OS, so RSS settles at
  the step's working set plus that margin instead of growing without bound.
* ``runtime.channels_last`` (``auto``: on for CNN trunks on CUDA and CPU) stores images
  NHWC, the layout cuDNN and oneDNN convolutions run natively.
* ``training.amp: auto`` is bf16 autocast on CUDA (no GradScaler needed), and on CPUs
  with native bf16 for CNNs without depthwise convolutions (ResNets: 1.9x measured;
  MobileNets are slower in bf16 there and stay fp32).
* ``runtime.compile`` wraps the model in ``torch.compile`` (off by default: its compile
  time only pays over long stages).

Why here and not in the engine: the queue's stage child, ``mkd run`` and the benchmarks all
apply the same settings through these functions, so a benchmark measures what trains.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported lazily: the CLI and the queue import this module
    import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

_applied: str | None = None


def tune_allocator(mode: Literal["default", "tuned"], trim_mib: int = 1024, top_pad_mib: int = 64) -> bool:
    """Apply ``mode`` to glibc's malloc of this process; True when the setting took effect.

    ``tuned``: no ``mmap`` for large blocks (they come from the heap and are reused across
    steps), free memory at the top of the heap returned to the OS above ``trim_mib``, and
    the heap grown ``top_pad_mib`` at a time. Not glibc (macOS, musl): nothing happens.
    Applying it twice is harmless; ``default`` after ``tuned`` does not undo it (set it
    before the first step, as :func:`apply_process_settings` does)."""
    global _applied
    if mode == "default" or not sys.platform.startswith("linux"):
        return False
    if _applied == mode:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0),
        (_M_TRIM_THRESHOLD, trim_mib << 20),
        (_M_TOP_PAD, top_pad_mib << 20),
    ))
    if ok:
        _applied = mode
    return ok


def apply_process_settings(threads: int | None, malloc: Literal["default", "tuned"]) -> None:
    """Threads and allocator of this process: called once before a stage runs."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    tune_allocator(malloc)


def amp_dtype(amp: str, device: "torch.device", model: "torch.nn.Module | None" = None) -> "torch.dtype | None":
    """The autocast dtype of a training or evaluation step (None: full fp32).

    ``auto``: bf16 on CUDA (same exponent range as fp32, so no loss scaling); on a CPU with
    native bf16 (oneDNN: AVX512-BF16 or AMX) bf16 for ``model`` when bf16 pays there (see
    :func:`bf16_pays_on_cpu`), else fp32. ``bf16``/``fp16`` ask for it (fp16 on CUDA only).
    Weights and optimiser state stay fp32 either way (autocast)."""
    import torch

    if amp == "none":
        return None
    if device.type == "cuda":
        return torch.float16 if amp == "fp16" else torch.bfloat16
    if device.type != "cpu" or not cpu_has_native_bf16():
        return None
    if amp == "bf16" or (amp == "auto" and model is not None and bf16_pays_on_cpu(model)):
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); emulated bf16 is slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_pays_on_cpu(model: "torch.nn.Module") -> bool:
    """True for convolutional models without grouped (depthwise) convolutions.

    Measured on the 2-core AVX512-BF16 dev machine, 400 frames forward + backward
    (``benchmarks/README.md``): ResNet-18 at 112 px 5.65 s fp32 -> 2.95 s bf16 (1.9x), but
    MobileNetV3-small/large 1.2-3.4x *slower* in bf16 (oneDNN's bf16 depthwise kernels). A
    model without convolutions (MFM on stored features) stays fp32: not measured."""
    import torch

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and all(m.groups == 1 for m in convs)


def wants_channels_last(setting: bool | Literal["auto"], device: "torch.device") -> bool:
    """``auto``: on for CUDA and CPU (oneDNN and cuDNN convolutions are NHWC-native)."""
    if setting == "auto":
        return device.type in ("cuda", "cpu")
    return bool(setting)


def prepare_model(model: "torch.nn.Module", channels_last: bool, compile: bool) -> "torch.nn.Module":
    """``model``, in place, in the memory format and compiled form the runtime asks for.
    Only 4-D parameters (conv weights) change layout, so heads and fusion modules are
    untouched; ``Module.compile`` compiles in place, so state-dict keys (checkpoints,
    model folders) stay those of the eager model."""
    import torch

    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model
