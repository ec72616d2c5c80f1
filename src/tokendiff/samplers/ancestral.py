"""The ancestral step: a draw from the kernel's reverse posterior ``p(x_s | x_t)``.

For masks it is the exact MDLM step: each masked token is revealed with probability
``(alpha_s - alpha_t) / (1 - alpha_t)``, with a value drawn from the model's clean-token distribution.
"""

from __future__ import annotations

import torch

from tokendiff.processes.base import Kernel
from tokendiff.samplers.noise import gumbel_argmax
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["AncestralStep"]


class AncestralStep:
    """``x_s ~ p(x_s | x_t)`` at the free positions, for every kernel."""

    remasks = False
    sweeps = 0

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        self.kernel = kernel

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        log_q = self.kernel.reverse_log_probs(log_p_x0, state.x, state.t, state.s)  # (B, L, K)
        return torch.where(state.free, gumbel_argmax(log_q, state.generators), state.x_start)  # (B, L)
