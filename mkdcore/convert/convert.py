"""Convert one original checkpoint: infer the model from its tensors, map its keys
(:mod:`.rules`), check every shape, and write an mkd model folder.

Widths come from the tensors (a projection's rows, the TRX key width, the MFM's
embedding tables and feed-forward width), so scaled-down checkpoints convert as well as
the paper-size ones; the frame count comes from ``frames`` and is checked against the
stored TRX positional table. The target model is built on the ``meta`` device (no
memory for the 0.55 B-parameter MFM until the folder is loaded), and the folder is
written by :func:`mkdcore.models.folder.save_model` like every mkd model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mkdcore.config import Component
from mkdcore.convert import BACKBONES, KINDS, ConvertError
from mkdcore.convert.reader import read_checkpoint
from mkdcore.convert.rules import PE_REASON, KeyMap, infer_backbone, infer_kind, map_keys, strip_module
from mkdcore.models.build import Spec, build, fewshot_spec

#: the original's test pipeline (spec 2.4): shorter side 256, centre crop 224, [0, 1] pixels
ORIGINAL_PIXELS = {"resize": 256, "crop": 224, "normalize": "none"}
#: torchvision MobileNetV3 BatchNorm epsilon (timm's default is 1e-5)
TORCHVISION_MOBILENET_BN_EPS = 1e-3
MODALITIES = ["rgb", "depth", "flow"]  # the MFM's m1, m2, m3 as the scripts pass them


@dataclass
class Conversion:
    """A converted model: its spec (widths resolved), its weights under mkd names, the
    key map, and what it was made from."""

    kind: str
    backbone: str | None
    spec: Spec
    state: dict[str, torch.Tensor]
    keys: KeyMap
    model: torch.nn.Module  # built on the meta device: structure only

    def summary(self) -> str:
        what = self.kind + (f" ({self.backbone})" if self.backbone else "")
        dropped = ", ".join(sorted({k.rsplit(".", 1)[0] for k in self.keys.dropped}))
        params = sum(p.numel() for p in self.model.parameters())
        return (f"{what}: {len(self.keys.mapped)} keys mapped, {len(self.keys.dropped)} dropped ({dropped}), "
                f"0 unmapped; {params:,} parameters")


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _shape(state: dict[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise ConvertError(f"{where}: no {key} (is it a checkpoint of this kind? pass --kind)")
    return tuple(state[key].shape)


def trx_options(state: dict[str, torch.Tensor], prefix: str, frames: int, where: str) -> dict[str, Any]:
    """The mkd ``trx`` options of the original's pairs-only TRX under ``prefix``, after
    checking its stored positional table is the one mkd computes for ``frames``."""
    from mkdcore.models.trx import sinusoidal_table

    out_dim, tuple_width = _shape(state, prefix + "k_linear.weight", where)
    pe = state.get(prefix + "pe.pe")
    if pe is not None:
        rows, dim = pe.shape[-2:]
        if rows != int(1.5 * frames):
            raise ConvertError(f"{where}: {prefix}pe.pe has {rows} rows, a TRX for {frames} frames has {int(1.5 * frames)}; "
                               f"pass the frame count it was trained with (--frames)")
        if dim * 2 != tuple_width:
            raise ConvertError(f"{where}: {prefix}k_linear.weight takes {tuple_width} inputs, not 2 x {dim} (a pairs-only TRX)")
        if pe.device.type != "meta":
            diff = float((pe.reshape(rows, dim).float() - sinusoidal_table(rows, dim, 0.1)).abs().max())
            if diff > 1e-4:
                raise ConvertError(f"{where}: {prefix}pe.pe is not the 0.1-scaled sinusoid TRX uses (max difference {diff:.3g}); "
                                   f"mkd recomputes that table, so this head would not give the same outputs")
    return {"temporal_set": [2], "out_dim": out_dim, "seq_len": frames, "dropout": 0.1, "pe_scale": 0.1}


def infer_spec(state: dict[str, torch.Tensor], kind: str, backbone: str | None, frames: int, modality: str,
               where: str) -> Spec:
    """The mkd spec of an original model, widths read off its tensors."""
    if kind == "teacher-mfm":
        dim = _shape(state, "three_fusion.positionEncoding1.position_embeddings.weight", where)[1]
        seq_len = _shape(state, "three_fusion.positionEncoding1.position_embeddings.weight", where)[0]
        layers = len({k.split(".")[3] for k in state if k.startswith("three_fusion.transformer_encoder.layers.")})
        ff_dim = _shape(state, "three_fusion.transformer_encoder.layers.0.linear1.weight", where)[0]
        fusion = {"name": "mfm", "options": {"modalities": MODALITIES, "dim": dim, "seq_len": seq_len, "layers": layers,
                                             "ff_dim": ff_dim, "dropout": 0.1, "shift": 1}}
        head = {"name": "trx", "options": {"in_dim": dim, **trx_options(state, "bracnch.transformers.0.", frames, where)}}
        return {"type": "fusion_teacher", "fusion": fusion, "head": head, "modalities": MODALITIES, "frames": frames, "dim": dim}
    assert backbone is not None
    pixels = {"root": "", "split": "", "split_id": "03", "frames": frames, **ORIGINAL_PIXELS}
    if kind == "teacher-baseline":
        spec = fewshot_spec(Component(name=backbone, options={"pooling": "avg", "projection": "none"}),
                            Component(name="mean_distance"), frames)
        return {**spec, "modality": modality, "data": pixels}
    proj = "backbone.fc1.weight" if kind == "student" else next(
        (k for k in ("backbone.res18_2048.weight", "backbone.fc.weight") if k in state), "backbone.fc.weight")
    options: dict[str, Any] = {"pooling": "maxmean", "projection": "2fc" if kind == "student" else "1fc",
                               "out_dim": _shape(state, proj, where)[0]}
    if backbone.startswith("mobilenet"):
        options["bn_eps"] = TORCHVISION_MOBILENET_BN_EPS
    spec = fewshot_spec(Component(name=backbone, options=options),
                        Component(name="trx", options=trx_options(state, "classifier.transformers.", frames, where)), frames)
    return {**spec, "modality": "rgb", "variant": "lite-mkd" if kind == "student" else "baseline", "data": pixels}


def convert_state(state: dict[str, torch.Tensor], kind: str | None = None, backbone: str | None = None, frames: int = 8,
                  modality: str = "rgb", where: str = "<checkpoint>") -> Conversion:
    """Map an original state dict onto the mkd model it describes (every key mapped or
    dropped by rule, every mkd key filled, every shape equal), or raise one line."""
    originals = {strip_module(k): k for k in state}  # reports name the keys as saved
    if len(originals) != len(state):
        raise ConvertError(f"{where}: keys differ only by 'module.' prefixes; a merge of two checkpoints?")
    state = {strip_module(k): v for k, v in state.items()}
    found = infer_kind(list(state))
    if kind is None:
        if found is None:
            raise ConvertError(f"{where}: no original Lite-MKD model has these keys ({_names(list(state))}); "
                               f"pass --kind ({', '.join(KINDS)})")
        kind = found
    elif kind not in KINDS:
        raise ConvertError(f"{where}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    elif found is not None and found != kind:
        raise ConvertError(f"{where}: its keys are those of a {found} checkpoint, not a {kind} (--kind)")
    if kind != "teacher-mfm":
        seen = infer_backbone(list(state), {k: tuple(v.shape) for k, v in state.items()})
        if backbone is not None and backbone not in BACKBONES:
            raise ConvertError(f"{where}: unknown backbone {backbone!r}; backbones: {', '.join(BACKBONES)}")
        if backbone is not None and seen is not None and seen != backbone:
            raise ConvertError(f"{where}: its trunk is a {seen}, not a {backbone} (--backbone)")
        backbone = backbone or seen
        if backbone is None:
            raise ConvertError(f"{where}: cannot tell its backbone from its keys; pass --backbone ({', '.join(BACKBONES)})")
    else:
        backbone = None
    spec = infer_spec(state, kind, backbone, frames, modality, where)
    with torch.device("meta"):
        model, spec = build(spec)
    target = model.state_dict()
    keys = map_keys(list(state), kind, list(target))
    if keys.unmapped:
        unmapped = [originals[k] for k in keys.unmapped]
        raise ConvertError(f"{where}: {len(unmapped)} keys no {kind} rule maps: {_names(unmapped)}")
    sources = {v: k for k, v in keys.mapped.items()}
    missing = [k for k in target if k not in sources]
    if missing:
        raise ConvertError(f"{where}: {len(missing)} weights of the mkd model have no source key: {_names(missing)}")
    wrong = [(src, dst) for dst, src in sources.items() if tuple(state[src].shape) != tuple(target[dst].shape)]
    if wrong:
        src, dst = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ConvertError(f"{where}: shape mismatch: {originals[src]} is {tuple(state[src].shape)}, {dst} needs "
                           f"{tuple(target[dst].shape)}{more}")
    out = {dst: state[src].to(target[dst].dtype) for dst, src in sources.items()}
    keys = KeyMap(mapped={originals[k]: v for k, v in keys.mapped.items()},
                  dropped={originals[k]: v for k, v in keys.dropped.items()})
    return Conversion(kind=kind, backbone=backbone, spec=spec, state=out, keys=keys, model=model)


def convert_file(path: str | Path, out: str | Path, kind: str | None = None, backbone: str | None = None,
                 frames: int = 8, modality: str = "rgb", root: str | Path | None = None,
                 split: str | None = None) -> Conversion:
    """Convert the checkpoint at ``path`` and write the model folder ``out``."""
    from mkdcore.models.folder import save_model

    path = Path(path)
    conv = convert_state(read_checkpoint(path), kind, backbone, frames, modality, str(path))
    if "data" in conv.spec:
        conv.spec["data"].update({"root": str(root) if root else "", "split": split or ""})
    conv.spec["converted_from"] = {"path": str(path), "kind": conv.kind, "keys": len(conv.keys.mapped) + len(conv.keys.dropped)}
    save_model(Path(out), conv.model, conv.spec, conv.state)
    return conv


__all__ = ["Conversion", "convert_file", "convert_state", "infer_spec", "trx_options", "PE_REASON"]
