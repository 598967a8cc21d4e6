"""Built-in plugin `distill_d2m`: D2M, Lite-MKD's dual distillation (spec 5.3).

Per task::

    total = kd_weight * KD_tau(logits_1, teacher logits)          # query level, branch 1
          + dist_weight * DIST(relations_2, teacher relations)    # support level, branch 2
          + ce_weight * CE(logits_2, y) / tasks_per_batch          # hard labels, branch 2
          [+ ce_weight * CE(logits_1, y) / tasks_per_batch]        # ce_on_both (the figure)

with tau = 4, weights 1 / 0.5 / 1. ``scaling="original"`` is the code (KD, with its tau^2,
and DIST not divided by tasks_per_batch); ``"balanced"`` divides every term by
``tasks_per_batch`` (see :mod:`plugins.distill_basic`). Branch 1 (``features``/fc1) thus gets
gradient from KD only, branch 2 from CE and DIST, the shared head and trunk from all.
A single-branch student uses branch 1 for all terms. Returned terms are unweighted and
unscaled; ``total`` is what to call ``backward()`` on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl


class D2MOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)
    dist_weight: float = Field(0.5, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    ce_on_both: bool = Field(False, description="also CE on branch 1 (the framework figure; original fc_2_sup_dist_cece)")
    scaling: Literal["original", "balanced"] = "original"
    tasks_per_batch: int = Field(16, ge=1)


class D2MDistiller:
    """KD on branch-1 query logits + DIST on branch-2 support relations + CE on branch 2."""

    def __init__(self, temperature=4.0, kd_weight=1.0, dist_weight=0.5, ce_weight=1.0, ce_on_both=False, scaling="original", tasks_per_batch=16) -> None:
        self.temperature, self.ce_on_both = temperature, ce_on_both
        self.weights = {"kd": kd_weight, "dist": dist_weight, "ce": ce_weight, "ce_1": ce_weight}
        self.scaling, self.tasks = scaling, tasks_per_batch

    def __call__(self, student, teacher, query_labels):
        from mkdcore.models.losses import ce_loss, dist_loss, kd_loss
        from plugins.distill_basic import combine, require_teacher

        teacher = require_teacher(teacher, "d2m")
        ce_logits = student.get("logits_2", student["logits_1"])
        relations = student.get("relations_2", student["relations_1"])
        terms = {
            "kd": kd_loss(student["logits_1"], teacher["logits"], self.temperature),
            "dist": dist_loss(relations, teacher["relations"]),
            "ce": ce_loss(ce_logits, query_labels),
        }
        if self.ce_on_both and "logits_2" in student:
            terms["ce_1"] = ce_loss(student["logits_1"], query_labels)
        return combine(terms, self.weights, {"kd", "dist"}, self.scaling, self.tasks)


@hookimpl
def register_distillers(register):
    register("d2m", D2MDistiller, options=D2MOptions, description="Lite-MKD D2M: KD(branch 1) + 0.5 DIST(support relations, branch 2) + CE(branch 2)")
