"""Backbones by the name ``model.arch`` gives them: a new backbone is its own file (a
:class:`~tokendiff.models.base.Backbone` with a ``from_config`` classmethod) plus one line here.

Names map to ``module:class`` strings, imported on first use, so that reading the names (the config's
check of ``model.arch``) imports no model code and no optional extra (``tokendiff[hf]``).
"""

from __future__ import annotations

import importlib

__all__ = ["BACKBONES", "backbone_class"]

BACKBONES: dict[str, str] = {
    "transformer": "tokendiff.models.transformer:Transformer",  # tokens: RoPE, RMSNorm, SwiGLU
    "hf": "tokendiff.models.hf:HFMaskedLM",  # a transformers masked or causal LM
    "image_conv": "tokendiff.models.image:ImageConvNet",  # binary images: a residual CNN
    "image_patch": "tokendiff.models.image:ImagePatchTransformer",  # binary images: a patch transformer
}


def backbone_class(arch: str) -> type:
    """The backbone class that ``model.arch=<arch>`` names (the config has checked the name)."""
    module, name = BACKBONES[arch].split(":")
    return getattr(importlib.import_module(module), name)
