"""ReMDM's remasking step (Wang et al. 2025, its "cap" schedule): revealed tokens may be masked again.

From t to s each revealed token is remasked with probability ``sigma = min(eta, (1 - alpha_s) / alpha_t)``
and each masked one revealed with probability ``(alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t)``, which
keeps every marginal ``q(z_s | x)`` of the forward process, so more steps can fix early mistakes.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.noise import gumbel_argmax, row_uniform
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["RemaskingStep"]


class RemaskingStep:
    """ReMDM's step from t to s (``sampling.remask=cap``): reveal masks, and remask revealed tokens."""

    remasks = True
    sweeps = 0

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        # the step is defined for masks only: a token once real must be clean (reveals_are_final)
        if not kernel.reveals_are_final or settings.strategy != "ancestral":
            raise TokenDiffError(
                "sampling.remask=cap is ReMDM's ancestral step for masks: it needs diffusion.process=absorbing "
                f"and sampling.strategy=ancestral (here {kernel.name}, {settings.strategy})"
            )
        self.mask_id = kernel.mask_token_id
        self.eta = float(settings.remask_eta)

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        alpha_t, alpha_s = state.alpha_t.item(), state.alpha_s.item()
        sigma = min(self.eta, (1.0 - alpha_s) / alpha_t) if alpha_t > 0 else 0.0
        masked = (state.x == self.mask_id) & state.free  # (B, L)
        p_reveal = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t) if alpha_t < 1 else 1.0
        u = row_uniform(state.generators, (state.x.shape[1],), state.x.device)  # (B, L)
        candidates = gumbel_argmax(log_p_x0, state.generators)  # (B, L)
        x = torch.where(masked & (u < p_reveal), candidates, state.x)
        return torch.where(state.free & ~masked & (u < sigma), self.mask_id, x)
