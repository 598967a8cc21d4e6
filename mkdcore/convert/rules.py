"""Key rules: original Lite-MKD state-dict names -> mkd model names.

Each rule reads a key's *name* (never its position in the file), so a checkpoint saved
in another order, or with a key missing, cannot silently shift weights onto the wrong
layer. ``module.`` components (DataParallel) are stripped first, wherever they sit
(``backbone.resnet.module.4...``, ``resnet.module.layer1...``).

=============================================  =============================================
original                                        mkd
=============================================  =============================================
``backbone.resnet.{0,1,4..7}.*``               ``backbone.trunk.{conv1,bn1,layer1..4}.*``
``backbone.mobile.0.<torchvision features>``   ``backbone.trunk.<timm MobileNetV3>`` (below)
``backbone.fc1`` / ``backbone.fc2``            ``backbone.proj_1`` / ``backbone.proj_2``
``backbone.res18_2048`` / ``backbone.fc``      ``backbone.proj_1`` (single-branch baselines)
``classifier.transformers.*``                  ``head.transformers.0.*``
``bracnch.transformers.0.*``                   ``head.transformers.0.*`` (MFM's TRX head)
``three_fusion.*`` / ``fusion.*``              ``fusion.multi.*`` / ``fusion.pair.*``
  ``positionEncoding<i>.position_embeddings``    ``pes.<i-1>.table``
  ``positionEncoding<i>.LayerNorm``              ``pes.<i-1>.norm``
  ``transformer_encoder.layers.*``               ``encoder.layers.*``
  ``f1``                                         ``out.0``
``resnet.<torchvision resnet key>``            ``backbone.trunk.<same key>`` (timm = torchvision)
=============================================  =============================================

Dropped, by rule: a TRX ``pe.pe`` (a fixed sinusoid that mkd recomputes; the converter
checks the stored one equals it) and ``norm_v`` (created but never used in TRX's forward).

MobileNetV3: torchvision's ``features.<k>`` is the stem (k = 0), the inverted residual
blocks (k = 1..n), and the last 1x1 conv (k = n + 1); timm names them ``conv_stem``/``bn1``,
``blocks.<stage>.<j>`` (the k-th block in stage order) and ``blocks.<last>.0.conv``/``bn1``.
Inside a block, torchvision's ``block.<c>`` children are [expand] depthwise [SE] project:
with an expand conv they are timm's ``conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3``, without
one ``conv_dw/bn1, conv_pw/bn2``; SE ``fc1``/``fc2`` are ``se.conv_reduce``/``se.conv_expand``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

#: torchvision ResNet children kept by ``children()[:-2]`` -> their names
RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
PE_REASON = "fixed sinusoidal table, recomputed by mkd (checked equal)"
NORM_V_REASON = "created but unused in TRX's forward pass"


class Drop(str):
    """A rule's answer for a key that is deliberately not carried over (the reason)."""


Rule = Callable[[str], "str | Drop | None"]


@dataclass
class KeyMap:
    """Where every original key went: ``mapped`` (original -> mkd), ``dropped``
    (original -> why), ``unmapped`` (no rule knows it)."""

    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)


def strip_module(key: str) -> str:
    """``key`` without its DataParallel ``module.`` components."""
    return ".".join(part for part in key.split(".") if part != "module")


def trx_rule(prefix: str) -> Rule:
    """The original's single TRX (one cardinality) -> mkd ``head.transformers.0``."""

    def rule(rest: str) -> str | Drop | None:
        if rest == "pe.pe":
            return Drop(PE_REASON)
        if re.fullmatch(r"norm_v\.(weight|bias)", rest):
            return Drop(NORM_V_REASON)
        if re.fullmatch(r"(k_linear|v_linear|norm_k)\.(weight|bias)", rest):
            return prefix + rest
        return None

    return rule


def fusion_block_rule(prefix: str) -> Rule:
    """``TwoTransforFusion`` / ``ThreeTransforTemproal`` -> mkd ``TransformerFusion``."""

    def rule(rest: str) -> str | None:
        m = re.fullmatch(r"positionEncoding(\d+)\.position_embeddings\.weight", rest)
        if m and int(m[1]) >= 1:
            return f"{prefix}pes.{int(m[1]) - 1}.table.weight"
        m = re.fullmatch(r"positionEncoding(\d+)\.LayerNorm\.(weight|bias)", rest)
        if m and int(m[1]) >= 1:
            return f"{prefix}pes.{int(m[1]) - 1}.norm.{m[2]}"
        if rest.startswith("transformer_encoder.layers."):
            return prefix + "encoder." + rest.removeprefix("transformer_encoder.")
        m = re.fullmatch(r"f1\.(weight|bias)", rest)
        return f"{prefix}out.0.{m[1]}" if m else None

    return rule


def resnet_sequential_rule(prefix: str) -> Rule:
    """``nn.Sequential(*resnet.children()[:-2])`` indices -> torchvision/timm names."""

    def rule(rest: str) -> str | None:
        index, _, tail = rest.partition(".")
        return f"{prefix}{RESNET_CHILDREN[index]}.{tail}" if index in RESNET_CHILDREN and tail else None

    return rule


class MobileNetRule:
    """torchvision ``mobilenet_v3_*().features`` keys -> timm MobileNetV3 trunk keys.

    Needs the source keys (to see which blocks have an expand conv and an SE) and the
    target keys (timm's stage/block grouping)."""

    def __init__(self, source_rests: list[str], target_keys: list[str], prefix: str) -> None:
        self.prefix = prefix
        blocks = sorted({(int(m[1]), int(m[2])) for k in target_keys
                         if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.(\d+)\.", k))})
        #: torchvision features index k (1-based over blocks) -> timm "blocks.S.J"
        self.blocks = {k: f"blocks.{s}.{j}" for k, (s, j) in enumerate(blocks, start=1)}
        self.last = len(blocks)  # features.<last> is timm's final ConvBnAct (the last block)
        self.children: dict[int, dict[int, str]] = {}  # features index -> block child -> role
        by_block: dict[int, set[int]] = {}
        se: dict[int, set[int]] = {}
        for rest in source_rests:
            m = re.match(r"(\d+)\.block\.(\d+)\.(fc1|fc2)?", rest)
            if m:
                by_block.setdefault(int(m[1]), set()).add(int(m[2]))
                if m[3]:
                    se.setdefault(int(m[1]), set()).add(int(m[2]))
        for k, kids in by_block.items():
            convs = sorted(kids - se.get(k, set()))
            names = ["conv_pw/bn1", "conv_dw/bn2", "conv_pwl/bn3"] if len(convs) == 3 else ["conv_dw/bn1", "conv_pw/bn2"]
            roles = dict(zip(convs, names)) if len(convs) in (2, 3) else {}
            roles.update({c: "se" for c in se.get(k, set())})
            self.children[k] = roles

    def __call__(self, rest: str) -> str | None:
        m = re.fullmatch(r"(\d+)\.(.+)", rest)
        if not m:
            return None
        k, tail = int(m[1]), m[2]
        if k == 0:  # stem: Conv2dNormActivation(conv, bn)
            return self._conv_bn(tail, "conv_stem", "bn1", "")
        if k == self.last:  # last 1x1 conv: timm ConvBnAct
            return self._conv_bn(tail, "conv", "bn1", self.blocks[k] + ".")
        if k not in self.blocks:
            return None
        m = re.fullmatch(r"block\.(\d+)\.(.+)", tail)
        role = self.children.get(k, {}).get(int(m[1])) if m else None
        if role is None:
            return None
        block = self.blocks[k] + "."
        if role == "se":
            se = re.fullmatch(r"fc([12])\.(weight|bias)", m[2])
            return f"{self.prefix}{block}se.conv_{'reduce' if se[1] == '1' else 'expand'}.{se[2]}" if se else None
        conv, bn = role.split("/")
        return self._conv_bn(m[2], conv, bn, block)

    def _conv_bn(self, tail: str, conv: str, bn: str, block: str) -> str | None:
        if tail == "0.weight":
            return f"{self.prefix}{block}{conv}.weight"
        if tail.startswith("1."):
            return f"{self.prefix}{block}{bn}.{tail[2:]}"
        return None


def rules_for(kind: str, source_keys: list[str], target_keys: list[str]) -> list[tuple[str, Rule]]:
    """``(original prefix, rule over the rest of the key)`` for a model kind."""
    if kind == "teacher-mfm":
        return [("bracnch.transformers.0.", trx_rule("head.transformers.0.")),
                ("three_fusion.", fusion_block_rule("fusion.multi.")),
                ("fusion.", fusion_block_rule("fusion.pair."))]
    if kind == "teacher-baseline":
        return [("resnet.", lambda rest: "backbone.trunk." + rest)]
    mobile = [k.removeprefix("backbone.mobile.0.") for k in source_keys if k.startswith("backbone.mobile.0.")]
    projections = {"fc1": "proj_1", "fc2": "proj_2"} if kind == "student" else {"res18_2048": "proj_1", "fc": "proj_1"}

    def projection(rest: str) -> str | None:
        layer, _, param = rest.partition(".")
        return f"backbone.{projections[layer]}.{param}" if layer in projections and param in ("weight", "bias") else None

    return [("backbone.resnet.", resnet_sequential_rule("backbone.trunk.")),
            ("backbone.mobile.0.", MobileNetRule(mobile, target_keys, "backbone.trunk.")),
            ("backbone.", projection),
            ("classifier.transformers.", trx_rule("head.transformers.0."))]


def map_keys(source_keys: list[str], kind: str, target_keys: list[str]) -> KeyMap:
    """Apply the rules of ``kind`` to every (``module.``-stripped) original key."""
    rules = rules_for(kind, source_keys, target_keys)
    out = KeyMap()
    for key in source_keys:
        answer = None
        for prefix, rule in rules:
            if key.startswith(prefix):
                answer = rule(key.removeprefix(prefix))
                if answer is not None:
                    break
        if isinstance(answer, Drop):
            out.dropped[key] = str(answer)
        elif answer is None:
            out.unmapped.append(key)
        else:
            out.mapped[key] = answer
    return out


def infer_kind(keys: list[str]) -> str | None:
    """The kind of an original (``module.``-stripped) state dict, from its key names."""
    has = set(keys).__contains__
    if any(k.startswith(("bracnch.", "three_fusion.")) for k in keys):
        return "teacher-mfm"
    if has("backbone.fc1.weight") and has("backbone.fc2.weight"):
        return "student"
    if has("backbone.res18_2048.weight") or has("backbone.fc.weight"):
        return "baseline"
    if has("resnet.conv1.weight"):
        return "teacher-baseline"
    return None


def infer_backbone(keys: list[str], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The mkd backbone name of a student/baseline/teacher-baseline state dict."""
    if any(k.startswith("backbone.mobile.0.") for k in keys):
        last = max((int(m[1]) for k in keys if (m := re.match(r"backbone\.mobile\.0\.(\d+)\.", k))), default=-1)
        channels = shapes.get(f"backbone.mobile.0.{last}.0.weight", (0,))[0]
        return {960: "mobilenetv3_large", 576: "mobilenetv3_small"}.get(channels)
    trunk = "backbone.resnet.4." if any(k.startswith("backbone.resnet.") for k in keys) else "resnet.layer1."
    if not any(k.startswith(trunk) for k in keys):
        return None
    bottleneck = any(k.startswith(trunk) and ".conv3." in k for k in keys)
    return "resnet50" if bottleneck else "resnet18"
