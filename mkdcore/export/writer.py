"""``mkd export``: a model folder -> a folder of two graphs and a card.

What is written (``OUT/``)::

    model.json                      # the source card + "export" (format, way, shot, files, inputs, outputs)
    encoder.onnx | encoder.torchscript.pt | encoder.pt2
    head.onnx    | head.torchscript.pt    | head.pt2

The encoder maps clips ``(N, T, 3, S, S)`` float32 to per-video features ``(N, T, W)``
(``W = branches * dim``, branches concatenated; :mod:`mkdcore.export.modules`); ``N`` is
dynamic, ``T`` and ``S`` are the card's. The head maps support features ``(Ns, T, W)``,
support labels ``(Ns,)`` int64 in ``0..way-1`` and query features ``(Nq, T, W)`` to
logits ``(Nq, way)``: ``way`` is static (fixed by ``--way``), ``Ns`` and ``Nq`` are
dynamic (``--shot`` sizes the example the graph is traced with; unequal shots work).
Graphs are traced in eval mode (dropout off). The folder is written whole or not at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mkdcore.errors import ConfigError, MkdError
from mkdcore.fileio import atomic_dir, atomic_write_json, first_line
from mkdcore.models.card import CARD, ModelCardError
from mkdcore.models.loaded import LoadedModel

#: format -> file suffix of its two graphs
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
ONNX_OPSET = 18


class ExportError(MkdError):
    """The model could not be turned into the asked format."""


def export_model(loaded: LoadedModel, fmt: str, way: int, shot: int, out: Path) -> dict[str, Any]:
    """Write the export folder ``out`` for ``loaded``; returns its card."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if way < 2 or shot < 1:
        raise ConfigError(f"--way must be >= 2 and --shot >= 1 (got way {way}, shot {shot})")
    if loaded.spec["type"] != "fewshot":
        raise ModelCardError(f"{loaded.path} is a {loaded.spec['type']} model: only few-shot models on frames export")
    size = loaded.frame_size
    if size is None:
        raise ModelCardError(f"{loaded.path / CARD} does not say its frame size (input.frame_size); it cannot be exported")
    t, w = loaded.frames, loaded.feature_width
    gen = torch.Generator().manual_seed(0)
    clips = torch.rand(2, t, 3, size, size, generator=gen)
    support = torch.randn(way * shot, t, w, generator=gen)
    labels = torch.arange(way).repeat_interleave(shot)
    queries = torch.randn(way, t, w, generator=gen)
    encoder, head = loaded.encoder().cpu(), loaded.head_module(way).cpu()
    suffix = FORMATS[fmt]
    files = {"encoder": f"encoder{suffix}", "head": f"head{suffix}"}
    with atomic_dir(out, "exported model") as tmp:
        try:
            _WRITERS[fmt](encoder, (clips,), ({0: "n"},), tmp / files["encoder"], ["clips"], {"features": ["n", t, w]})
            _WRITERS[fmt](head, (support, labels, queries), ({0: "ns"}, {0: "ns"}, {0: "nq"}), tmp / files["head"],
                          ["support", "support_labels", "queries"], {"logits": ["nq", way]})
        except MkdError:
            raise
        except Exception as exc:  # noqa: BLE001  (tracers raise anything; the user gets one line)
            raise ExportError(f"exporting {loaded.path} as {fmt} failed: {first_line(exc)}") from None
        card = {**loaded.card, "weights": None, "export": {
            "format": fmt, "way": way, "shot": shot, "files": files, "torch": torch.__version__,
            "opset": ONNX_OPSET if fmt == "onnx" else None, "source": str(loaded.path),
            "inputs": {"encoder": {"clips": {"shape": ["N", t, 3, size, size], "dtype": "float32"}},
                       "head": {"support": {"shape": ["Ns", t, w], "dtype": "float32"},
                                "support_labels": {"shape": ["Ns"], "dtype": "int64"},
                                "queries": {"shape": ["Nq", t, w], "dtype": "float32"}}},
            "outputs": {"encoder": {"features": {"shape": ["N", t, w], "dtype": "float32"}},
                        "head": {"logits": {"shape": ["Nq", way], "dtype": "float32"}}},
        }}
        atomic_write_json(tmp / CARD, card, "model card")
    return card


def _dims(dynamic: tuple[dict[int, str], ...]) -> tuple[dict[int, Any], ...]:
    """Name -> one shared ``torch.export.Dim`` per name (labels and support share ``ns``)."""
    made: dict[str, Any] = {}
    return tuple({i: made.setdefault(n, torch.export.Dim(n, min=1)) for i, n in d.items()} for d in dynamic)


def _onnx(module: torch.nn.Module, args: tuple, dynamic: tuple, path: Path, inputs: list[str],
          outputs: dict[str, list[str | int]]) -> None:
    """The TorchScript-based exporter (``dynamo=False``): 0.5 s of CPU for a ResNet-18 or
    MobileNetV3-small student where the torch.export-based one took 7-12 s (it traces the
    model twice, with fake tensors and symbolic shapes). Its graphs have the same inputs,
    outputs, dynamic dimensions, opset and numbers (tests/test_export.py) and run as fast
    in onnxruntime. torch deprecates it for ``dynamo=True`` but ships it in the pinned
    torch; should a torch drop it, the dynamo exporter is the one-line replacement
    (``dynamo=True, dynamic_shapes=_dims(dynamic)``)."""
    import onnx

    axes = dict(zip(inputs, dynamic))
    axes.update({name: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for name, shape in outputs.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=list(outputs),
                          dynamic_axes=axes, opset_version=ONNX_OPSET)
    # Its shape inference leaves sizes computed by a Reshape symbolic (e.g. logits (nq,
    # "Addlogits_dim_1")): declare the static ones, as the card does, for runtimes that read them.
    graph = onnx.load(str(path), load_external_data=False)
    for value in graph.graph.output:
        for dim, size in zip(value.type.tensor_type.shape.dim, outputs[value.name], strict=True):
            if isinstance(size, int):
                dim.dim_value = size
    onnx.save(graph, str(path))


def _torchscript(module: torch.nn.Module, args: tuple, dynamic: tuple, path: Path, inputs: list[str],
                 outputs: dict[str, list[str | int]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, args, check_trace=False)
        torch.jit.save(traced, str(path))  # deprecated in favour of torch.export, still the format many runtimes load


def _exported_program(module: torch.nn.Module, args: tuple, dynamic: tuple, path: Path, inputs: list[str],
                      outputs: dict[str, list[str | int]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, args, dynamic_shapes=_dims(dynamic))
    torch.export.save(program, str(path))


_WRITERS: dict[str, Callable[..., None]] = {"onnx": _onnx, "torchscript": _torchscript, "exported-program": _exported_program}
