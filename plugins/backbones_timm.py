"""Built-in plugin `backbones_timm`: timm frame encoders (never downloading weights).

Names: ``resnet18``, ``resnet50``, ``mobilenetv3_small`` (timm ``mobilenetv3_small_100``),
``mobilenetv3_large`` (``mobilenetv3_large_100``) and ``timm:<any timm model>``.
See :mod:`mkdcore.models.backbone` for pooling and projections.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl

NAMED = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
}


class BackboneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pooling: Literal["maxmean", "avg"] = Field("maxmean", description="maxmean: 4x4 adaptive max pool then mean (original); avg: global average")
    projection: Literal["none", "1fc", "2fc"] = Field("none", description="2fc: two independent Linear C->out_dim (Lite-MKD student)")
    out_dim: int = Field(2048, ge=1, description="projection width (ignored with projection none)")
    pretrained: str | None = Field(None, description="local timm/torchvision state dict (.pth/.safetensors)")
    channels_last: bool = False
    bn_eps: float | None = Field(None, gt=0, description="BatchNorm epsilon of the trunk (None: timm's 1e-5; torchvision's MobileNetV3, hence the original students, 1e-3)")


class WildcardOptions(BackboneOptions):
    variant: str = Field("resnet18", description="timm model name (from the name timm:<variant>)")


def _build(variant: str, **options):
    from mkdcore.models.backbone import TimmBackbone

    return TimmBackbone(variant=variant, **options)


@hookimpl
def register_backbones(register):
    for name, variant in NAMED.items():
        register(name, partial(_build, variant), options=BackboneOptions, description=f"timm {variant} trunk, pooling + optional 1fc/2fc projection")
    register("timm:*", _build, options=WildcardOptions, description="any timm model as a frame trunk: timm:<model name>")
