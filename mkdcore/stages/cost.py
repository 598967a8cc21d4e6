"""Params and per-episode cost of the experiment's models, on ONE test episode of the
config (way x shot support + way x query_test queries, data.frames frames, data.crop px).

Units: ``gmacs`` = 10^9 multiply-adds of conv/linear layers (thop rules; the unit the
paper calls "GFLOPs"); ``gflops`` = 10^9 FLOPs from torch's FlopCounterMode.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mkdcore.config import ExperimentConfig
from mkdcore.models.profile import ThopCounter, count_params, profile_episode


def fewshot_cost(model: torch.nn.Module, cfg: ExperimentConfig) -> dict[str, Any]:
    ep = cfg.episodes
    p = profile_episode(model, ep.way, ep.shot, ep.query_test, cfg.data.frames, cfg.data.crop)
    return {"params": p["params"], "gmacs": p["gmacs"], "gflops": p["gflops"]}


@torch.no_grad()
def mfm_teacher_cost(fusion_teacher: torch.nn.Module, teacher_costs: dict[str, dict[str, Any]], cfg: ExperimentConfig) -> dict[str, Any]:
    """The whole multi-modal teacher at test time: every modality's teacher network on
    its frames, plus MFM and its head on their features (derivation itself not counted)."""
    ep = cfg.episodes
    n_s, n_q, t = ep.way * ep.shot, ep.way * ep.query_test, cfg.data.frames
    meta = copy.deepcopy(fusion_teacher).to("meta").eval()
    dim = fusion_teacher.dim
    labels = torch.arange(ep.way, device="meta").repeat_interleave(ep.shot)
    support = {m: torch.empty(n_s, t, dim, device="meta") for m in meta.modalities}
    query = {m: torch.empty(n_q, t, dim, device="meta") for m in meta.modalities}
    flops = FlopCounterMode(display=False)
    with ThopCounter(meta) as counter, flops:  # one forward for both counts (see profile_episode)
        meta(support, labels, query, way=ep.way)
    return {
        "params": count_params(fusion_teacher) + sum(c["params"] for c in teacher_costs.values()),
        "gmacs": counter.macs / 1e9 + sum(c["gmacs"] for c in teacher_costs.values()),
        "gflops": flops.get_total_flops() / 1e9 + sum(c["gflops"] for c in teacher_costs.values()),
    }

