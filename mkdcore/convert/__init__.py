"""Convert the original Lite-MKD checkpoints (HuiGuanLab/Lite-MKD) into mkd model folders.

The original code saves state dicts whose key names follow its own module tree
(``backbone.resnet.4.0.conv1.weight``, ``bracnch.transformers.0.k_linear.weight``,
``resnet.module.layer1...``); ``../shared/fixtures/original-checkpoints/README.md``
describes them. :mod:`.rules` maps every key by a rule over its name (never by its
position in the file), :mod:`.convert` infers the model's widths from the tensors'
shapes, builds the same model with the one builder and writes it through
:func:`mkdcore.models.folder.save_model`, so a converted model loads, evaluates and
distils like one mkd trained.
"""

from __future__ import annotations

from mkdcore.errors import MkdError

#: what ``mkd convert --kind`` accepts
KINDS = ("student", "baseline", "teacher-mfm", "teacher-baseline")
#: what ``mkd convert --backbone`` accepts (mkd backbone names)
BACKBONES = ("resnet18", "resnet50", "mobilenetv3_small", "mobilenetv3_large")


class ConvertError(MkdError):
    """An original checkpoint cannot be read or does not map onto an mkd model."""
