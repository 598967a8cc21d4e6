"""Built-in plugin `fusion_mfm`: MFM hierarchical fusion and the mean/concat baselines."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mkdcore.hookspecs import hookimpl


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modalities: list[str] = Field(default_factory=lambda: ["rgb", "depth", "flow"], description="rgb first (filled from modalities.names)")
    dim: int = Field(2048, ge=1, description="feature width D of every modality")

    @field_validator("modalities")
    @classmethod
    def _rgb_first(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or v[0] != "rgb" or len(set(v)) != len(v):
            raise ValueError("distinct modalities, rgb first, at least two")
        return v


class MFMOptions(_Base):
    seq_len: int = Field(8, ge=1, description="frames (positional tables)")
    layers: int = Field(2, ge=1, description="transformer layers (paper: 2)")
    heads: int | None = Field(None, ge=1, description="heads of the M-modal transformer (None: M)")
    pair_heads: int | None = Field(None, ge=1, description="heads of the bi-modal transformer (None: 2)")
    ff_dim: int = Field(2048, ge=1, description="feed-forward width (the method: 2048, PyTorch's default, whatever the feature width)")
    dropout: float = Field(0.1, ge=0, lt=1)
    shift: int = Field(1, description="partner rolled by -shift frames before pairing with rgb")


class ConcatOptions(_Base):
    dropout: float = Field(0.1, ge=0, lt=1)


def _mfm(**o):
    from mkdcore.models.fusion import MFM

    return MFM(**o)


def _mean(**o):
    from mkdcore.models.fusion import MeanFusion

    return MeanFusion(**o)


def _concat(**o):
    from mkdcore.models.fusion import ConcatFusion

    return ConcatFusion(**o)


@hookimpl
def register_fusions(register):
    register("mfm", _mfm, options=MFMOptions, description="hierarchical M-modal + shifted rgb-x transformer fusion (Lite-MKD MFM)")
    register("mean", _mean, options=_Base, description="mean of the modality features (baseline)")
    register("concat", _concat, options=ConcatOptions, description="concatenation then Linear M*D->D (baseline)")
