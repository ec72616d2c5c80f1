"""The naive baseline on corrupted data: train on ``y`` as if it were clean, scoring only its observed
tokens, at all noise levels (see :mod:`tokendiff.objectives.ambient` for the setting)."""

from __future__ import annotations

import torch

from tokendiff.objectives.base import Objective
from tokendiff.objectives.rules import check_t_min
from tokendiff.objectives.times import sample_times
from tokendiff.processes.absorbing import scored_nll
from tokendiff.processes.base import Kernel

__all__ = ["NaiveObjective"]


class NaiveObjective(Objective):
    """The masked NELBO of ``y`` with its masked tokens treated as masked inputs and left unscored."""

    name = "naive"
    extra_tokens = 0
    reports_train_nelbo = False  # corrupted training sequences have no clean NELBO

    def __init__(self, kernel: Kernel, t_min: float = 1e-3, antithetic: bool = True):
        check_t_min(t_min)
        self.kernel = kernel
        self.t_min = t_min
        self.antithetic = antithetic

    def loss_terms(self, model, y: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        mask = self.kernel.mask_token_id
        t = sample_times(y.shape[0], self.t_min, self.antithetic, generator, y.device)  # (B,)
        z = self.kernel.corrupt(y, t, generator)  # already-masked tokens stay masked
        scored = (y != mask) & (z == mask)  # (B, L)
        weight = self.kernel.nelbo_weight(t.float())[:, None]  # (B, 1)
        return scored_nll(model(z, t), y, scored, weight)
