"""Model cards: the ``model.json`` that makes a model folder self-describing.

Why a card and not just the build spec: a model that leaves the experiment (``mkd
predict``, ``mkd export``, a colleague's notebook) must say, with no config beside it,
how to rebuild it (the spec the one builder reads, widths resolved), what its input is
(modality, frames, frame size, resize, normalisation, the sampling rule of the data
pipeline), how wide its features are, which code made it (mkd and the distribution and
version of each component's plugin, so a missing plugin is named with what to install)
and how good it is (``evaluation``, written by the ``evaluate`` stage when known).

Card fields (format :data:`CARD_FORMAT`)::

    {"format": 2, "type": "fewshot" | "fusion_teacher",
     "spec": {...},                    # what models.build.build() rebuilds from
     "input": {...},                   # see input_contract()
     "features": {"dim", "branches", "width", "frames"},
     "versions": {"mkd": "0.1.0", "components": {"backbone": {"name", "package", "version"}, ...}},
     "weights": "model.safetensors",
     "evaluation": null | {"accuracy", "ci95", "episodes", "way", "shot", "query", "params", "gmacs", ...},
     "export": absent | {...}}          # only in folders written by `mkd export`

Old folders hold the bare spec in ``model.json`` (a dict with ``type`` and no ``format``)
and ``model.pt`` weights: :func:`card_of` reads them as a format-1 card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdcore.errors import DataError, PluginError

CARD = "model.json"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pt"
#: the card format this mkd writes and the newest it reads
CARD_FORMAT = 2

#: spec key -> registry kind of the components a spec names
COMPONENT_KINDS = {"backbone": "backbone", "fusion": "fusion", "head": "head"}

SAMPLING_RULE = ("T frame indices out of the n frames of a video: all of them when n == T, else "
                 "floor(linspace(1, n-2, T)) (floor(linspace(0, n-1, T)) when n-2-1 < T); "
                 "videos with fewer than T frames are refused (mkdcore.data.video.sample_indices, test mode)")


class ModelCardError(DataError):
    """A model folder whose card is missing or that this mkd cannot read (newer format)."""


def components(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{spec key: {"name", "options"}}`` of the plugin components a spec names."""
    return {key: spec[key] for key in COMPONENT_KINDS if isinstance(spec.get(key), dict) and "name" in spec[key]}


def component_versions(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Which distribution (and version) provides each component of ``spec``, as
    registered now: what a loader names when the plugin is missing."""
    from mkdcore.plugins import get_manager

    out = {}
    for key, comp in components(spec).items():
        plugin = get_manager().registry.get(COMPONENT_KINDS[key], comp["name"])
        out[key] = {"name": comp["name"], "package": plugin.package, "version": plugin.version}
    return out


def input_contract(spec: dict[str, Any]) -> dict[str, Any]:
    """What the model reads, as the data pipeline fed it in testing (``spec["data"]`` is
    the experiment's data section; absent in hand-built specs, then sizes are null)."""
    from mkdcore.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    data = spec.get("data") or {}
    frames = data.get("frames", spec.get("frames"))
    if spec["type"] == "fusion_teacher":
        return {"modalities": list(spec["modalities"]), "frames": frames, "layout": "{modality: (N, T, D) float features}"}
    normalize = data.get("normalize", "none")
    return {
        "modality": spec.get("modality", "rgb"),
        "frames": frames,
        "frame_size": data.get("crop"),
        "resize": data.get("resize"),
        "normalize": normalize,
        "mean": list(IMAGENET_MEAN) if normalize == "imagenet" else None,
        "std": list(IMAGENET_STD) if normalize == "imagenet" else None,
        "layout": "(N, T, 3, H, W) float32 RGB in [0, 1] (then mean/std when normalize is imagenet)",
        "resize_rule": "shorter side to `resize` (antialiased), centre crop `frame_size` x `frame_size`",
        "sampling": SAMPLING_RULE,
    }


def feature_widths(spec: dict[str, Any], model: Any) -> dict[str, Any]:
    """Per-branch feature width ``dim``, ``branches`` and ``width = dim * branches``: the
    width of the per-video ``(T, width)`` features the encoder gives (branches
    concatenated)."""
    if spec["type"] == "fusion_teacher":
        dim, branches = int(spec["dim"]), 1
    else:
        dim, branches = int(model.backbone.out_dim), int(model.branches)
    return {"dim": dim, "branches": branches, "width": dim * branches, "frames": spec.get("frames")}


def make_card(spec: dict[str, Any], model: Any, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of a model built from ``spec`` (widths resolved)."""
    from mkdcore import __version__

    return {
        "format": CARD_FORMAT,
        "type": spec["type"],
        "spec": spec,
        "input": input_contract(spec),
        "features": feature_widths(spec, model),
        "versions": {"mkd": __version__, "components": component_versions(spec)},
        "weights": WEIGHTS,
        "evaluation": evaluation,
    }


def card_of(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A card from the JSON of ``model.json``: format-2 cards as they are, an old bare
    spec wrapped as a format-1 card (``model.pt`` weights, no versions); a newer format
    is one line."""
    from mkdcore import __version__

    fmt = raw.get("format")
    if fmt is None and "type" in raw:
        return {"format": 1, "type": raw["type"], "spec": raw, "input": input_contract(raw) if raw.get("type") else {},
                "features": None, "versions": {"mkd": None, "components": {}}, "weights": LEGACY_WEIGHTS, "evaluation": None}
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise ModelCardError(f"model card {path} has no valid format number; it is not an mkd model card")
    if fmt > CARD_FORMAT:
        made = (raw.get("versions") or {}).get("mkd") or "a newer mkd"
        raise ModelCardError(f"model card {path} has format {fmt} (made by mkd {made}); this mkd ({__version__}) "
                             f"reads up to format {CARD_FORMAT}: upgrade lite-mkd")
    if not isinstance(raw.get("spec"), dict) or "type" not in raw["spec"]:
        raise ModelCardError(f"model card {path} has no model spec")
    return raw


def check_plugins(card: dict[str, Any], path: Path) -> None:
    """Every component the card names is registered; else one line naming the
    component and the distribution that provided it when the model was saved."""
    from mkdcore.plugins import get_manager

    recorded = card["versions"].get("components") or {}
    for key, comp in components(card["spec"]).items():
        kind = COMPONENT_KINDS[key]
        try:
            get_manager().registry.get(kind, comp["name"])
        except PluginError:
            source = recorded.get(key) or {}
            package = source.get("package")
            if package:
                version = source.get("version") or ""
                pin = f"{package}>={version}" if version else package
                raise PluginError(f"{path} needs the {kind} {comp['name']!r} from the package {package} {version}".rstrip()
                                  + f", which is not installed here: pip install '{pin}'") from None
            raise PluginError(f"{path} needs the {kind} {comp['name']!r}, which no installed plugin registers") from None


class CardView:
    """What a model's card says about its input, read the same way for an eager
    :class:`~mkdcore.models.loaded.LoadedModel` and an
    :class:`~mkdcore.export.runtime.ExportedModel` (each has a ``card`` dict)."""

    card: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        """What :func:`mkdcore.models.build.build` rebuilds the model from."""
        return self.card["spec"]

    @property
    def input(self) -> dict[str, Any]:
        """The input contract (modality, frames, frame_size, resize, normalize, ...)."""
        return self.card["input"]

    @property
    def frames(self) -> int:
        return int(self.input["frames"])

    @property
    def frame_size(self) -> int | None:
        return self.input.get("frame_size")
