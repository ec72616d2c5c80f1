"""Exponential moving average of the weights, with a warm-up of the decay.

Written by hand because ``torch.optim.swa_utils.AveragedModel`` has a fixed decay: with decay 0.999 a
run of 800 steps would still carry 0.999^800 = 45% of its first, nearly random, weights. Here the decay
is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as in timm and Karras et al.), so the average
follows the weights early and smooths them late.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["EMA"]


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)  # ema <- d * ema + (1 - d) * p
        self.updates += 1
