"""Exponential moving average of the weights, with a warm-up of the decay.

Written by hand because ``torch.optim.swa_utils.AveragedModel`` has a fixed decay: with decay 0.999 a
run of 800 steps would still carry 0.999^800 = 45% of its first, nearly random, weights. Here the decay
is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as in timm and Karras et al.), so the average
follows the weights early and smooths them late.

Only trained parameters are averaged: a frozen one (the base model of a LoRA run, ``training.lora``) is its own
average at every step, so the EMA copy shares it with the model instead of holding a second copy of it.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["EMA"]


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        frozen = {id(p): p for p in model.parameters() if not p.requires_grad}  # shared, not copied
        self.module = copy.deepcopy(model, memo=dict(frozen)).eval()
        self.module.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        pairs = [(e, p.detach()) for e, p in zip(self.module.parameters(), model.parameters()) if p.requires_grad]
        ema_params, params = [e for e, _ in pairs], [p for _, p in pairs]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)  # ema <- d * ema + (1 - d) * p
        self.updates += 1
