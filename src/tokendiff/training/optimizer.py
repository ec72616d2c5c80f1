"""Learning-rate schedule and weight-decay groups.

Written by hand (nanoGPT's ``get_lr``) rather than with ``torch.optim.lr_scheduler``: a pure function
of the step needs no state of its own, so a resumed run gets exactly the rate it would have had.
"""

from __future__ import annotations

import math

import torch

__all__ = ["learning_rate", "param_groups"]


def learning_rate(step: int, peak: float, floor: float, warmup: int, decay_end: int) -> float:
    """Rate for optimizer step ``step`` (0-based)."""
    # 1) linear warmup for `warmup` steps
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    # 2) after the decay, stay at the floor
    if step >= decay_end:
        return floor
    # 3) in between, cosine decay from peak to floor
    progress = (step - warmup) / max(1, decay_end - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings (dim >= 2); never norms' gains or biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
