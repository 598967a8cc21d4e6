"""A support set's share of the few-shot head is computed once per support set, not per
query (``head.prepare``): same logits as the whole head, bit for bit, for TRX, for a head
without ``prepare`` (mean distance) and through the two-branch deploy head and
``LoadedModel``; ``mkd predict``'s loop prepares once for all its queries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mkdcore import api
from mkdcore.config import Component
from mkdcore.export.modules import FewShotHead
from mkdcore.models.build import build, fewshot_spec
from mkdcore.models.folder import save_model
from mkdcore.models.trx import TRXHead

FRAMES, SIZE = 4, 32


def _features(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, FRAMES, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
@pytest.mark.parametrize("temporal_set", [[2], [1, 2, 3]])
def test_trx_prepared_logits_equal_the_heads(temporal_set):
    torch.manual_seed(0)
    head = TRXHead(in_dim=12, out_dim=8, temporal_set=temporal_set, seq_len=FRAMES).eval()
    support, labels = _features(6, 12, 1), torch.tensor([0, 0, 0, 1, 2, 2])  # unequal shots
    scorer = head.prepare(support, labels, way=3)
    for seed in (2, 3):  # one prepared support set, several query batches
        queries = _features(4, 12, seed)
        assert torch.equal(scorer(queries), head(support, labels, queries, way=3)["logits"])


@torch.no_grad()
def test_the_support_is_projected_once_for_any_number_of_queries():
    head = TRXHead(in_dim=12, out_dim=8, temporal_set=[2], seq_len=FRAMES).eval()
    rows: list[int] = []
    head.transformers[0].k_linear.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    scorer = head.prepare(_features(5, 12, 1), torch.tensor([0, 1, 2, 3, 4]))
    assert rows == [5]  # the five support videos, now
    for seed in (2, 3, 4):
        scorer(_features(1, 12, seed))
    assert rows == [5, 1, 1, 1]  # then one query video per call, never the support again


@torch.no_grad()
@pytest.mark.parametrize("name", ["trx", "mean_distance"])
def test_deploy_head_prepared_equals_forward_for_heads_with_and_without_prepare(name, plugin_manager):
    options = {"in_dim": 6, "out_dim": 8, "temporal_set": [2], "seq_len": FRAMES} if name == "trx" else {}
    torch.manual_seed(0)
    inner = api.create("head", name, **options).eval()
    head = FewShotHead(inner, way=3, dim=6, branches=2).eval()
    support, labels, queries = _features(5, 12, 1), torch.tensor([0, 1, 1, 2, 2]), _features(3, 12, 2)
    assert torch.equal(head.prepare(support, labels)(queries), head(support, labels, queries))


@torch.no_grad()
def test_loaded_model_prepare_head_equals_head(tmp_path: Path, plugin_manager):
    torch.manual_seed(0)
    spec = fewshot_spec(Component(name="resnet18", options={"projection": "2fc", "out_dim": 16}),
                        Component(name="trx", options={"out_dim": 8, "temporal_set": [2]}), FRAMES)
    spec.update(modality="rgb", variant="lite-mkd", data={"root": "data/x", "split": "x", "split_id": "03", "frames": FRAMES,
                                                          "resize": 40, "crop": SIZE, "normalize": "imagenet"})
    model, resolved = build(spec)
    save_model(tmp_path / "model", model.eval(), resolved)
    loaded = api.load_model(tmp_path)
    support, labels, queries = _features(5, 32, 1), torch.tensor([0, 0, 1, 2, 2]), _features(2, 32, 2)
    whole = loaded.head_module(3)(support, labels, queries)  # the deploy head's forward, what an export runs
    assert torch.equal(loaded.prepare_head(support, labels)(queries), whole)
    assert torch.equal(loaded.head(support, labels, queries), whole)


def test_predict_prepares_the_head_once_for_all_queries(monkeypatch):
    from mkdcore.predict import predict as predict_module
    from mkdcore.predict.model import InputContract, Predictor
    from mkdcore.predict.support import SupportSet

    calls = {"prepare": 0, "score": 0}

    class CountingModel:  # the Model protocol of mkdcore.predict.model
        def encode(self, clips):
            raise AssertionError("not called: encode_query is replaced below")

        def head(self, support, support_labels, queries, way=None):
            raise AssertionError("predict must use the prepared head")

        def prepare_head(self, support, support_labels, way=None):
            calls["prepare"] += 1

            def score(queries):
                calls["score"] += 1
                return torch.tensor([[0.0, 2.0, 1.0]]) + queries.sum()

            return score

    predictor = Predictor(Path("m"), CountingModel(), InputContract("rgb", FRAMES, 40, SIZE, "imagenet"), "fp", "torch")
    support = SupportSet(classes=["a", "b", "c"], labels=torch.tensor([0, 1, 2]), features=torch.zeros(3, FRAMES, 2),
                         clips=["", "", ""], fingerprint="fp", frames=FRAMES)
    monkeypatch.setattr(predict_module, "encode_query", lambda p, path: torch.zeros(1, FRAMES, 2))
    out = list(predict_module.predict(predictor, support, [Path("q1"), Path("q2"), Path("q3")], top_k=2))
    assert calls == {"prepare": 1, "score": 3}
    assert [p.top[0][0] for p in out] == ["b", "b", "b"] and len(out[0].top) == 2
