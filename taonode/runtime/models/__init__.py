"""Reference models: three small fixed-seed networks and a plain-torch BERT encoder.

Each factory returns ``(module, example_inputs)`` with the module in eval mode, ready for
``torch.export``. They are written with a deliberately small op vocabulary (see docs/bounds.md)
so every op they lower to has a theoretical bound.
"""

from __future__ import annotations

from taonode.runtime.models.bert import BertConfig, BertEncoder, load_hf_bert, minilm
from taonode.runtime.models.reference import REFERENCE_MODELS, cnn, transformer, unet

__all__ = [
    "REFERENCE_MODELS",
    "BertConfig",
    "BertEncoder",
    "cnn",
    "load_hf_bert",
    "minilm",
    "transformer",
    "unet",
]
