"""Distillers: finite terms, documented scaling, gradients reach exactly the right layers."""

from __future__ import annotations

import math

import pytest
import torch

from mkdcore import api
from mkdcore.errors import TrainingError
from mkdcore.models.fewshot import FeatureHeadModel, FewShotModel
from mkdcore.models.losses import dist_loss, kd_loss

WAY, SHOT, QUERY, FRAMES, DIM = 3, 2, 2, 3, 16


@pytest.fixture(scope="module")
def episode():
    torch.manual_seed(0)
    student = FewShotModel(
        api.create("backbone", "resnet18", projection="2fc", out_dim=DIM),
        api.create("head", "trx", in_dim=DIM, out_dim=8, temporal_set=[2], seq_len=FRAMES),
    )
    teacher = FeatureHeadModel(api.create("head", "trx", in_dim=DIM, out_dim=8, temporal_set=[2], seq_len=FRAMES)).eval()
    labels = torch.arange(WAY).repeat_interleave(SHOT)
    qlabels = torch.arange(WAY).repeat_interleave(QUERY)
    s_frames = torch.rand(WAY * SHOT, FRAMES, 3, 32, 32)
    q_frames = torch.rand(WAY * QUERY, FRAMES, 3, 32, 32)
    with torch.no_grad():
        t_out = teacher(torch.randn(WAY * SHOT, FRAMES, DIM), labels, torch.randn(WAY * QUERY, FRAMES, DIM))
    return student, s_frames, labels, q_frames, qlabels, t_out


def grads(student, out, term_fn):
    student.zero_grad(set_to_none=True)
    term_fn(out).backward(retain_graph=True)
    bb = student.backbone

    def norm(p):
        return 0.0 if p.grad is None else p.grad.abs().sum().item()

    return norm(bb.proj_1.weight), norm(bb.proj_2.weight), norm(bb.trunk.conv1.weight)


def test_d2m_terms_and_gradient_routing(episode):
    student, s, labels, q, qlabels, teacher = episode
    out = student.train()(s, labels, q)
    losses = api.create("distiller", "d2m")(out, teacher, qlabels)
    assert set(losses) == {"kd", "dist", "ce", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    expected = losses["kd"] + 0.5 * losses["dist"] + losses["ce"] / 16  # "original" scaling
    torch.testing.assert_close(losses["total"], expected)

    d2m = api.create("distiller", "d2m")
    kd_only = grads(student, out, lambda o: d2m(o, teacher, qlabels)["kd"])

    def hard_and_support(o):
        t = d2m(o, teacher, qlabels)
        return 0.5 * t["dist"] + t["ce"] / 16

    rest = grads(student, out, hard_and_support)
    total = grads(student, out, lambda o: d2m(o, teacher, qlabels)["total"])
    assert kd_only[0] > 0 and kd_only[1] == 0.0, "KD reaches branch 1 only"
    assert rest[0] == 0.0 and rest[1] > 0, "CE and DIST reach branch 2 only"
    assert total[0] > 0 and total[1] > 0 and total[2] > 0
    assert total[0] == pytest.approx(kd_only[0], rel=1e-4), "branch 1 gets gradient from KD alone"


def test_teacher_outputs_get_no_gradient(episode):
    student, s, labels, q, qlabels, teacher = episode
    out = student(s, labels, q)
    t_logits = teacher["logits"].clone().requires_grad_(True)
    t_rel = teacher["relations"].clone().requires_grad_(True)
    api.create("distiller", "d2m")(out, {"logits": t_logits, "relations": t_rel}, qlabels)["total"].backward()
    assert t_logits.grad is None and t_rel.grad is None


def test_balanced_scaling_and_ce_on_both(episode):
    student, s, labels, q, qlabels, teacher = episode
    out = student(s, labels, q)
    bal = api.create("distiller", "d2m", scaling="balanced", ce_on_both=True, tasks_per_batch=4)(out, teacher, qlabels)
    expected = (bal["kd"] + 0.5 * bal["dist"] + bal["ce"] + bal["ce_1"]) / 4
    torch.testing.assert_close(bal["total"], expected)


def test_kd_and_ce_and_feature_mse(episode):
    student, s, labels, q, qlabels, teacher = episode
    out = student(s, labels, q)
    ce = api.create("distiller", "ce")(out, None, qlabels)
    torch.testing.assert_close(ce["total"], torch.nn.functional.cross_entropy(out["logits_2"], qlabels) / 16)
    kd = api.create("distiller", "kd")(out, teacher, qlabels)
    torch.testing.assert_close(kd["total"], ce["ce"] / 16 + 2 * kd_loss(out["logits_1"], teacher["logits"]))
    mse = api.create("distiller", "feature_mse")(out, teacher, qlabels)
    assert torch.isfinite(mse["feature_mse"]) and mse["feature_mse"] > 0
    with pytest.raises(TrainingError, match="needs teacher"):
        api.create("distiller", "d2m")(out, None, qlabels)


def test_loss_term_definitions():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    assert kd_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    p_s, p_t = (s / 4).softmax(1), (t / 4).softmax(1)
    assert kd_loss(s, t).item() == pytest.approx(16 * (p_t * (p_t.log() - p_s.log())).sum(1).mean().item(), rel=1e-5)
    assert dist_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert dist_loss(t, -t).item() > 1.0  # anti-correlated rows


# --------------------------------------------------------------------------------------------
# Spec 5.2/5.3 written out independently (plain Python floats, no torch ops) on crafted values,
# compared numerically with the product: each formula's parts (which softmax, which axis, tau,
# tau^2, mean vs sum, the weights and the tasks_per_batch scaling) change these numbers.

def _softmax(row: list[float], tau: float = 1.0) -> list[float]:
    z = [math.exp(v / tau) for v in row]
    return [v / sum(z) for v in z]


def _spec_kd(student: list[list[float]], teacher: list[list[float]], tau: float) -> float:
    """KD_tau = tau^2 * mean over queries of sum over classes p_t (log p_t - log p_s), p = softmax(l / tau)."""
    per_query = []
    for s, t in zip(student, teacher):
        p_s, p_t = _softmax(s, tau), _softmax(t, tau)
        per_query.append(sum(pt * (math.log(pt) - math.log(ps)) for ps, pt in zip(p_s, p_t)))
    return tau**2 * sum(per_query) / len(per_query)


def _pearson(a: list[float], b: list[float], eps: float = 1e-8) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [x - ma for x in a], [x - mb for x in b]
    dot = sum(x * y for x, y in zip(ca, cb))
    return dot / (math.sqrt(sum(x * x for x in ca)) * math.sqrt(sum(y * y for y in cb)) + eps)


def _spec_dist(student: list[list[float]], teacher: list[list[float]]) -> float:
    """DIST = 1 - (1/W) sum_i pearson(softmax(S_i), softmax(T_i)), softmax at tau 1 over each row."""
    rhos = [_pearson(_softmax(s), _softmax(t)) for s, t in zip(student, teacher)]
    return 1.0 - sum(rhos) / len(rhos)


def _spec_ce(logits: list[list[float]], labels: list[int]) -> float:
    """Mean over queries of -log softmax(l)[y]."""
    return sum(-math.log(_softmax(row)[y]) for row, y in zip(logits, labels)) / len(labels)


# 5-way relations (W, W-1) = (5, 4): with only 2 columns every centred row pair is (anti)parallel
# and the softmax could be dropped unnoticed. Moderate values so the softmax is far from one-hot.
T_REL = [[-0.5, -1.5, -3.0, -1.0], [-0.5, -2.0, -0.8, -2.6], [-1.5, -2.0, -0.3, -1.2],
         [-3.0, -0.8, -0.3, -0.9], [-1.0, -2.6, -1.2, -0.9]]
S_REL = [[-1.0, -0.4, -2.2, -1.8], [-0.7, -1.1, -0.6, -3.0], [-0.2, -2.4, -1.0, -0.5],
         [-2.1, -1.3, -0.1, -0.6], [-0.4, -1.9, -2.8, -1.5]]
# branch-1 relations: what a swap of the distilled branch would read
S_REL_1 = [[-2.0, -0.1, -0.7, -1.1], [-0.3, -0.3, -2.5, -1.0], [-1.7, -0.9, -0.2, -2.2],
           [-0.6, -2.9, -1.4, -0.2], [-1.3, -0.5, -0.8, -2.4]]
# 3 queries x 5 classes, teacher confident (large logits) so tau matters
T_LOGITS = [[6.0, -2.0, 1.0, -4.0, 0.5], [-3.0, 5.0, 2.0, 0.0, -1.0], [1.0, 0.0, -2.0, 7.0, 3.0]]
S_LOGITS_1 = [[1.0, 0.5, -0.5, -1.0, 0.0], [0.2, 2.0, -1.5, 0.3, 0.1], [-0.4, 1.2, 0.0, 2.5, -2.0]]
S_LOGITS_2 = [[2.0, -1.0, 0.3, 0.0, -0.7], [-0.5, 1.5, 0.8, -2.0, 0.4], [0.9, -0.3, -1.1, 1.7, 0.6]]
Q_LABELS = [0, 1, 3]


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_kd_equals_spec_formula_on_crafted_logits():
    for tau in (4.0, 1.0, 2.5):
        expected = _spec_kd(S_LOGITS_1, T_LOGITS, tau)
        assert kd_loss(_t(S_LOGITS_1), _t(T_LOGITS), tau).item() == pytest.approx(expected, rel=1e-9)
    assert kd_loss(_t(S_LOGITS_1), _t(T_LOGITS)).item() == pytest.approx(_spec_kd(S_LOGITS_1, T_LOGITS, 4.0), rel=1e-9)


def test_dist_equals_spec_formula_on_crafted_relations():
    assert dist_loss(_t(S_REL), _t(T_REL)).item() == pytest.approx(_spec_dist(S_REL, T_REL), rel=1e-9)
    assert dist_loss(_t(T_REL), _t(S_REL)).item() == pytest.approx(_spec_dist(T_REL, S_REL), rel=1e-9)


def test_dist_compares_row_softmaxes_not_raw_relations():
    """A row scaled by 2 is perfectly correlated raw, not after the row softmax; a row shifted by a
    constant has the same softmax (DIST 0)."""
    scaled = [[2 * v + 1 for v in row] for row in T_REL]
    expected = _spec_dist(scaled, T_REL)
    assert expected > 1e-3  # the softmax makes the difference
    assert dist_loss(_t(scaled), _t(T_REL)).item() == pytest.approx(expected, rel=1e-9)
    shifted = [[v - 3.0 * (i + 1) for v in row] for i, row in enumerate(T_REL)]
    assert dist_loss(_t(shifted), _t(T_REL)).item() == pytest.approx(0.0, abs=1e-6)  # eps 1e-8 in rho


def test_support_relations_known_values():
    """Prototypes by label (mean over shots), -||P_i - P_j||_F^2 / T, j != i in increasing order."""
    from mkdcore.models.relations import support_relations

    frames, dim = 2, 3
    # class c's two shots average to a prototype with every entry c (and 0.5 * c^2 for the last class)
    centres = [0.0, 1.0, 3.0]
    support, labels = [], []
    for c, v in enumerate(centres):
        for delta in (-0.25, 0.25):
            support.append([[v + delta] * dim] * frames)
            labels.append(c)
    order = [3, 0, 5, 1, 4, 2]  # shuffled: grouping is by label, not position
    rel = support_relations(_t([support[i] for i in order]), torch.tensor([labels[i] for i in order]))
    # ||P_i - P_j||_F^2 = frames * dim * (v_i - v_j)^2, divided by frames
    expected = [[-dim * (centres[i] - centres[j]) ** 2 for j in range(3) if j != i] for i in range(3)]
    torch.testing.assert_close(rel, _t(expected))


@pytest.mark.parametrize("tasks,scaling", [(16, "original"), (4, "original"), (4, "balanced")])
def test_d2m_total_equals_spec_on_crafted_outputs(tasks, scaling):
    """L = KD_4(s_kl, t_kl) + 0.5 DIST(s_sup, t_sup) + CE(s_ce, y) / tasks (spec 5.3): KD on
    branch-1 logits, DIST on branch-2 relations, CE on branch-2 logits; balanced divides all."""
    student = {"logits_1": _t(S_LOGITS_1), "logits_2": _t(S_LOGITS_2), "logits": _t(S_LOGITS_1) + _t(S_LOGITS_2),
               "relations_1": _t(S_REL_1), "relations_2": _t(S_REL), "relations": _t(S_REL)}
    teacher = {"logits": _t(T_LOGITS), "relations": _t(T_REL)}
    out = api.create("distiller", "d2m", tasks_per_batch=tasks, scaling=scaling)(student, teacher, torch.tensor(Q_LABELS))
    kd, dist, ce = _spec_kd(S_LOGITS_1, T_LOGITS, 4.0), _spec_dist(S_REL, T_REL), _spec_ce(S_LOGITS_2, Q_LABELS)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-9)
    assert out["dist"].item() == pytest.approx(dist, rel=1e-9)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-9)
    soft_divisor = tasks if scaling == "balanced" else 1
    expected = (kd + 0.5 * dist) / soft_divisor + ce / tasks
    assert out["total"].item() == pytest.approx(expected, rel=1e-9)
