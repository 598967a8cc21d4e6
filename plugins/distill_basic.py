"""Built-in plugin `distill_basic`: the `ce`, `kd` and `feature_mse` distillers.

Every distiller returns the raw terms (``ce`` = mean cross-entropy over queries, ``kd`` =
``tau^2``-scaled temperature KD, ...) and ``total``, the weighted, scaled sum to call
``backward()`` on once per task; the engine accumulates gradients over
``tasks_per_batch`` tasks and steps (it must not divide again).

``scaling``:

* ``original``: the original code's constants: CE divided by ``tasks_per_batch`` (16), the
  soft terms not divided (spec 5.3/5.4, bug 8). Reproduces the paper's optimisation.
* ``balanced``: *every* term divided by ``tasks_per_batch``, so one optimiser step follows
  the mean gradient of its tasks and the ``tau^2`` KD has the same weight against CE as in
  Hinton et al. A cleaner choice, but it changes the effective learning rate of the soft
  terms by 16x: keep ``original`` to reproduce the paper.

Which student logits: CE goes on ``logits_2`` when the student has two branches (the
"ce" branch) else ``logits_1`` (``target="auto"``), on the summed ``logits``
(``target="sum"``), or on each branch (``target="both"``); KD always goes onto
``logits_1`` (branch 1, the "kl" branch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from mkdcore.errors import TrainingError
from mkdcore.hookspecs import hookimpl

if TYPE_CHECKING:  # torch is imported where a loss is computed: loading plugins stays light
    import torch

Scaling = Literal["original", "balanced"]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scaling: Scaling = Field("original", description="original: CE/tasks_per_batch only; balanced: every term / tasks_per_batch")
    tasks_per_batch: int = Field(16, ge=1, description="the divisor of the original code (tasks accumulated per step)")
    target: Literal["auto", "sum", "both"] = Field("auto", description="CE on: auto = logits_2 if two branches else logits_1")


class CEOptions(_Common):
    reduction: Literal["mean", "sum"] = Field("mean", description="over queries: mean (students, teachers) or sum (original MFM)")


class KDOptions(_Common):
    temperature: float = Field(4.0, gt=0)
    weight: float = Field(2.0, ge=0, description="weight of the KD term (original KD: 2)")


class FeatureMSEOptions(KDOptions):
    feature_weight: float = Field(1.0, ge=0)


def ce_terms(student: dict[str, torch.Tensor], labels: torch.Tensor, target: str, reduction: str = "mean") -> dict[str, torch.Tensor]:
    """The CE term(s) on the chosen logits."""
    from mkdcore.models.losses import ce_loss

    if target == "sum":
        return {"ce": ce_loss(student["logits"], labels, reduction)}
    if target == "both" and "logits_2" in student:
        return {"ce": ce_loss(student["logits_2"], labels, reduction), "ce_1": ce_loss(student["logits_1"], labels, reduction)}
    key = "logits_2" if "logits_2" in student else "logits_1"
    return {"ce": ce_loss(student[key], labels, reduction)}


def require_teacher(teacher: dict | None, name: str) -> dict:
    if teacher is None:
        raise TrainingError(f"distiller {name!r} needs teacher outputs (distillation.distiller.name: use 'ce' to train without a teacher)")
    return teacher


def combine(terms: dict[str, torch.Tensor], weights: dict[str, float], soft: set[str], scaling: str, tasks: int) -> dict[str, torch.Tensor]:
    """``total`` = sum of weight x term, hard terms (not in ``soft``) / tasks, soft ones too when balanced."""
    total = None
    for name, value in terms.items():
        divisor = tasks if (name not in soft or scaling == "balanced") else 1
        part = weights.get(name, 1.0) * value / divisor
        total = part if total is None else total + part
    return {**terms, "total": total}


class CEDistiller:
    """No distillation: cross-entropy only (the README's "-" rows)."""

    def __init__(self, scaling: Scaling = "original", tasks_per_batch: int = 16, target: str = "auto", reduction: str = "mean") -> None:
        self.scaling, self.tasks, self.target, self.reduction = scaling, tasks_per_batch, target, reduction

    def __call__(self, student, teacher, query_labels):
        return combine(ce_terms(student, query_labels, self.target, self.reduction), {}, set(), self.scaling, self.tasks)


class KDDistiller:
    """CE + weight x KD_tau(logits_1, teacher logits) (original ``KD``: CE/16 + 2 KD_4)."""

    name = "kd"

    def __init__(self, scaling: Scaling = "original", tasks_per_batch: int = 16, target: str = "auto", temperature: float = 4.0, weight: float = 2.0) -> None:
        self.scaling, self.tasks, self.target = scaling, tasks_per_batch, target
        self.temperature, self.weight = temperature, weight

    def soft_terms(self, student, teacher) -> dict[str, torch.Tensor]:
        from mkdcore.models.losses import kd_loss

        return {"kd": kd_loss(student["logits_1"], teacher["logits"], self.temperature)}

    def __call__(self, student, teacher, query_labels):
        teacher = require_teacher(teacher, self.name)
        soft = self.soft_terms(student, teacher)
        terms = {**ce_terms(student, query_labels, self.target), **soft}
        return combine(terms, self.weights(), set(soft), self.scaling, self.tasks)

    def weights(self) -> dict[str, float]:
        return {"kd": self.weight}


class FeatureMSEDistiller(KDDistiller):
    """CE + weight x KD + feature_weight x MSE(student, teacher features) (original ``KL_feature``)."""

    name = "feature_mse"

    def __init__(self, feature_weight: float = 1.0, **kw) -> None:
        super().__init__(**kw)
        self.feature_weight = feature_weight

    def soft_terms(self, student, teacher):
        import torch
        import torch.nn.functional as F

        terms = super().soft_terms(student, teacher)
        s = torch.cat([student["support_features"], student["query_features"]])
        t = torch.cat([teacher["support_features"], teacher["query_features"]]).detach()
        if s.shape != t.shape:
            raise TrainingError(f"feature_mse: student features {tuple(s.shape)} and teacher features {tuple(t.shape)} differ in shape")
        terms["feature_mse"] = F.mse_loss(s, t.to(s.dtype))
        return terms

    def weights(self):
        return {"kd": self.weight, "feature_mse": self.feature_weight}


@hookimpl
def register_distillers(register):
    register("ce", CEDistiller, options=CEOptions, description="no distillation: cross-entropy on the student logits",
             needs_teacher=False)
    register("kd", KDDistiller, options=KDOptions, description="CE + weight x temperature KD onto branch-1 logits")
    register("feature_mse", FeatureMSEDistiller, options=FeatureMSEOptions, description="CE + KD + MSE between student and teacher features")
