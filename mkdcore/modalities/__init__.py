"""Modalities derived from RGB frames: the contract and shared helpers.

:mod:`base` (the :class:`Modality` contract and :class:`Clip`), :mod:`flow_encoding`
(flow <-> images), :mod:`optical_flow` (OpenCV and RAFT estimators), :mod:`colour`
(depth colour maps), :mod:`pose` (skeleton estimators and drawing), the paper's expert
networks :mod:`flownet2` (flow) and :mod:`adabins` (depth) with :mod:`checkpoints` (strict
loading of their official files), and :mod:`alphapose` (AlphaPose result files). The built-in
modalities are the plugins ``plugins/modality_{rgb,flow,depth,skeleton}.py``; the runner
is :mod:`mkdcore.data.derive`.
"""

from mkdcore.modalities.base import Clip, Modality, check_images

__all__ = ["Clip", "Modality", "check_images"]
