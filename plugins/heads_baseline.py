"""Built-in plugin `heads_baseline`: the teacher "Baseline" mean-distance head."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl


class MeanDistanceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_dim: int = Field(2048, ge=1, description="frame feature width (unused: no parameters)")


def _build(**options):
    from mkdcore.models.baseline import MeanDistanceHead

    return MeanDistanceHead(**options)


@hookimpl
def register_heads(register):
    register("mean_distance", _build, options=MeanDistanceOptions, description="minus the mean Euclidean distance to each shot (teacher Baseline)")
