"""Backbones: tokens (+ optional time) -> logits (B, L, V)."""

from tokendiff.models.transformer import Transformer

__all__ = ["Transformer"]
