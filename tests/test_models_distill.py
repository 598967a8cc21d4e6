"""Distillers: finite terms, documented scaling, gradients reach exactly the right layers."""

from __future__ import annotations

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
