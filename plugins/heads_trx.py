"""Built-in plugin `heads_trx`: the TRX temporal-relational cross-transformer head."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mkdcore.hookspecs import hookimpl


class TRXOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_dim: int = Field(2048, ge=1, description="frame feature width (filled from the backbone)")
    out_dim: int = Field(1152, ge=1, description="key/value width D'")
    temporal_set: list[int] = Field(default_factory=lambda: [2, 3], description="tuple cardinalities; Lite-MKD uses [2]")
    seq_len: int = Field(8, ge=1, description="frames per clip (positional table length = int(1.5 x seq_len))")
    dropout: float = Field(0.1, ge=0, lt=1)
    pe_scale: float = 0.1

    @field_validator("temporal_set")
    @classmethod
    def _cardinalities(cls, v: list[int]) -> list[int]:
        if not v or any(c < 1 for c in v) or len(set(v)) != len(v):
            raise ValueError("a non-empty list of distinct cardinalities >= 1")
        return v


def _build(**options):
    from mkdcore.models.trx import TRXHead

    return TRXHead(**options)


@hookimpl
def register_heads(register):
    register("trx", _build, options=TRXOptions, description="TRX cross-transformer head (vectorised, any way/shot/query)")
