"""Backbones: tokens (+ optional time) -> logits (B, L, V), each declaring its capabilities (:mod:`.base`)."""

from tokendiff.models.base import Backbone, Denoiser
from tokendiff.models.transformer import Transformer

__all__ = ["Backbone", "Denoiser", "Transformer"]
