"""TRX and Baseline heads: equal to loop-based references, order-free, any episode shape."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mkdcore import api
from mkdcore.models.relations import support_relations


def spec_positional_table(length: int, dim: int, scale: float = 0.1) -> torch.Tensor:
    """Spec 3.3, written out: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), times 0.1."""
    table = [[0.0] * dim for _ in range(length)]
    for p in range(length):
        for i in range(0, dim, 2):
            angle = p / 10000 ** (i / dim)
            table[p][i] = scale * math.sin(angle)
            if i + 1 < dim:
                table[p][i + 1] = scale * math.cos(angle)
    return torch.tensor(table)


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.t() + layer.bias


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * norm.weight + norm.bias


def reference_trx_cardinality(t, support, labels, queries):
    """The original TemporalCrossTransformer, loop per class and per query (spec 3.3), with the
    positional table from the spec formula and the layers as plain matrix algebra on their weights."""
    tuples = [torch.tensor(c) for c in itertools.combinations(range(support.shape[1]), t.cardinality)]
    pe = spec_positional_table(support.shape[1], support.shape[2])
    s, q = support + pe, queries + pe  # eval: dropout is the identity
    s = torch.stack([s[:, idx].reshape(s.shape[0], -1) for idx in tuples], dim=1)
    q = torch.stack([q[:, idx].reshape(q.shape[0], -1) for idx in tuples], dim=1)
    s_k, s_v = _layer_norm(_linear(s, t.k_linear), t.norm_k), _linear(s, t.v_linear)
    q_k, q_v = _layer_norm(_linear(q, t.k_linear), t.norm_k), _linear(q, t.v_linear)
    d_out = t.v_linear.weight.shape[0]
    way = int(labels.max()) + 1
    logits = torch.zeros(q.shape[0], way)
    for c in range(way):
        ks, vs = s_k[labels == c], s_v[labels == c]  # (K, n, D')
        for i in range(q.shape[0]):
            scores = torch.einsum("ad,kbd->akb", q_k[i], ks) / math.sqrt(d_out)
            attn = scores.reshape(len(tuples), -1).softmax(-1).reshape(scores.shape)
            proto = torch.einsum("akb,kbd->ad", attn, vs)
            logits[i, c] = -((q_v[i] - proto) ** 2).sum() / len(tuples)
    return logits


def reference_relations(support, labels):
    way = int(labels.max()) + 1
    protos = [support[labels == c].mean(0) for c in range(way)]
    return torch.tensor([[-((protos[i] - protos[j]) ** 2).sum().item() / support.shape[1] for j in range(way) if j != i] for i in range(way)])


def episode(way, shots, query, frames, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    shots = [shots] * way if isinstance(shots, int) else shots
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(shots)])
    perm = torch.randperm(len(labels), generator=g)
    support = torch.randn(len(labels), frames, dim, generator=g)[perm]
    queries = torch.randn(way * query, frames, dim, generator=g)
    return support, labels[perm], queries


def trx(temporal_set=(2, 3), dim=32, frames=4):
    torch.manual_seed(0)
    return api.create("head", "trx", in_dim=dim, out_dim=24, temporal_set=list(temporal_set), seq_len=frames).eval()


@pytest.mark.parametrize("way,shots,query,frames", [(5, 5, 1, 4), (3, 1, 2, 4), (4, [1, 3, 2, 5], 3, 5), (2, 2, 1, 3)])
def test_trx_equals_reference_loop(way, shots, query, frames):
    head = trx((2, 3), frames=frames)
    support, labels, queries = episode(way, shots, query, frames, 32)
    with torch.no_grad():
        out = head(support, labels, queries)
        expected = torch.stack([reference_trx_cardinality(t, support, labels, queries) for t in head.transformers], -1).mean(-1)
    assert out["logits"].shape == (way * query, way)
    torch.testing.assert_close(out["logits"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["relations"], reference_relations(support, labels), rtol=1e-4, atol=1e-3)
    assert out["relations"].shape == (way, way - 1)


@pytest.mark.parametrize("name", ["trx", "mean_distance"])
def test_logits_do_not_depend_on_support_order(name):
    head = trx() if name == "trx" else api.create("head", name, in_dim=32)
    support, labels, queries = episode(5, [2, 3, 1, 2, 4], 2, 4, 32)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = head(support, labels, queries)
        b = head(support[perm], labels[perm], queries)
    torch.testing.assert_close(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a["relations"], b["relations"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seq_len,dim", [(4, 32), (8, 6)])
def test_positional_table_is_the_spec_formula(seq_len, dim):
    """Fixed sin/cos table, scaled by 0.1, int(1.5 * seq_len) rows (spec 3.3)."""
    head = api.create("head", "trx", in_dim=dim, out_dim=8, temporal_set=[2], seq_len=seq_len)
    table = head.transformers[0].pe.pe
    assert table.shape == (int(1.5 * seq_len), dim)
    torch.testing.assert_close(table, spec_positional_table(int(1.5 * seq_len), dim), rtol=1e-5, atol=1e-6)


def test_positional_encoding_is_added_to_every_frame_then_dropout():
    """x + PE in eval; in training each element of x + PE is dropped or scaled by 1 / (1 - p)."""
    head = api.create("head", "trx", in_dim=8, out_dim=4, temporal_set=[2], seq_len=4, dropout=0.5)
    pe_module = head.transformers[0].pe
    x = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    expected = x + spec_positional_table(4, 8)
    torch.testing.assert_close(pe_module.eval()(x), expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    out = pe_module.train()(x)
    kept = out != 0
    assert 0 < kept.sum() < out.numel()
    torch.testing.assert_close(out[kept], expected[kept] / 0.5, rtol=1e-5, atol=1e-6)


def test_mean_distance_equals_definition():
    head = api.create("head", "mean_distance")
    support, labels, queries = episode(3, [1, 2, 4], 2, 4, 16)
    logits = head(support, labels, queries)["logits"]
    for i in range(queries.shape[0]):
        for c in range(3):
            d = torch.stack([torch.linalg.norm(queries[i].mean(0) - s.mean(0)) for s in support[labels == c]]).mean()
            assert logits[i, c].item() == pytest.approx(-d.item(), rel=1e-5)


def test_trx_classifies_separable_episode_and_trains():
    """Queries equal to a class's support clip are nearest to that class; gradients flow."""
    head = trx((2,))
    support, labels, _ = episode(4, 2, 1, 4, 32)
    queries = torch.stack([support[labels == c][0] for c in range(4)])
    out = head.train()(support, labels, queries)
    out["logits"].sum().backward()
    assert head.eval()(support, labels, queries)["logits"].argmax(1).tolist() == [0, 1, 2, 3]
    assert head.transformers[0].k_linear.weight.grad.abs().sum() > 0


def test_support_relations_any_way_and_device_follows_input():
    support, labels, _ = episode(7, 2, 1, 3, 8)
    rel = support_relations(support.double(), labels)
    assert rel.shape == (7, 6) and rel.dtype == torch.float64 and (rel < 0).all()


def test_trx_rejects_too_few_frames_for_cardinality():
    head = trx((2, 3), frames=4)
    support, labels, queries = episode(2, 1, 1, 2, 32)
    with pytest.raises(ValueError, match="cardinality 3"):
        head(support, labels, queries)
