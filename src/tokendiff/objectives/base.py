"""The objective interface: what the trainer and the likelihood evaluation call.

An *objective* turns a batch into per-token loss terms. A diffusion objective wraps a kernel
(:class:`tokendiff.processes.Kernel`) and decides how times are drawn and what is scored: clean data
(:class:`~tokendiff.objectives.clean.CleanObjective`), corrupted data taken at face value
(:class:`~tokendiff.objectives.naive.NaiveObjective`) or corrupted data with the ambient losses
(:class:`~tokendiff.objectives.ambient.AmbientObjective`). The autoregressive yardstick is an objective
without a kernel.
"""

from __future__ import annotations

from typing import Protocol

import torch

from tokendiff.processes.base import Kernel

__all__ = ["Objective"]


class Objective(Protocol):
    name: str
    kernel: Kernel | None  # the clean kernel to sample and evaluate with; None: autoregressive
    t_min: float  # training times are drawn from [t_min, 1] (0 for autoregressive)
    extra_tokens: int  # a training window holds block_size + extra_tokens tokens

    def loss_terms(
        self, model, x: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0
    ) -> torch.Tensor:
        """Per-token loss terms (B, L) of a batch ``x``; ``model(x, t) -> logits (B, L, V)``.

        ``progress``: share of training done (objectives that change over training use it).
        """
