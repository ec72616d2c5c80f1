"""The backbone protocol: what every denoiser is called with, returns, and declares it can do.

A backbone maps token ids to logits over the real tokens; callers never probe it (``getattr``/``hasattr``)
but read its declared capabilities, as transformers' ``PreTrainedModel`` declares
``supports_gradient_checkpointing``. :class:`Backbone` holds the defaults, so a new backbone (one file)
states only what it does differently, and samplers, trainer and checkpoints follow.

Call: ``model(x, t=None) -> logits``, ``x`` (B, L) ids over ``V + 1`` values (the last is the mask),
``t`` (B,) times or None, logits (B, L, V) over the real tokens. A backbone with ``supports_kv_cache`` also
has ``forward_cached(x, t, start, cache) -> (logits, cache)``: ``x`` holds positions ``start ..`` of a
window whose other positions' keys and values are in ``cache`` (:class:`tokendiff.models.transformer.KVCache`).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

__all__ = ["Backbone", "Denoiser"]


class Denoiser(Protocol):
    """The interface a sampler or trainer relies on (:class:`Backbone` implements its defaults)."""

    vocab_size: int  # V real tokens; the logits' last dimension
    block_size: int  # the context length: the longest ``L`` one call accepts
    causal: bool  # autoregressive: position i attends to positions <= i only; logits i predict token i + 1
    time_conditioning: bool  # whether the logits depend on ``t`` (a time-agnostic model ignores it)
    block_diffusion: int | None  # BD3-LM block size: attention to clean earlier blocks; None: not a block model
    supports_kv_cache: bool  # has ``forward_cached`` (keys and values of other positions from a cache)
    # takes its previous estimate of x0: ``model(x, t, previous=probs (B, L, V))`` (None: it makes a first one)
    self_conditioning: bool
    exports_pretrained: bool  # has ``export(directory, tokenizer)``: the weights in save_pretrained's format
    logit_shift: bool  # the logits of position i come from position i - 1's output (Dream's A2D convention)

    def __call__(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor: ...


class Backbone(nn.Module):
    """Base class of tokendiff's backbones: the declared capabilities, with the defaults of a plain
    bidirectional, time-agnostic denoiser. Subclasses set ``vocab_size`` and ``block_size`` and override the
    capabilities they have (as class attributes, or in ``__init__`` where they depend on arguments)."""

    causal: bool = False
    time_conditioning: bool = False
    block_diffusion: int | None = None
    supports_kv_cache: bool = False
    self_conditioning: bool = False
    exports_pretrained: bool = False
    logit_shift: bool = False  # position i's token read from position i - 1's output (Dream; model.logit_shift)
    # LoRA (training.lora): the layers adapters go on when training.lora.target_modules is null, as peft matches
    # names (a module whose name is or ends with one); None: no default of the backbone's own
    lora_targets: tuple[str, ...] | None = None

    def lora_root(self) -> nn.Module:
        """The module LoRA adapters are injected into, their names (in ``adapter_model.safetensors``) relative
        to it: the backbone itself, or the transformers model a wrapper holds (so that peft knows its type)."""
        return self
