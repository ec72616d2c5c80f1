"""Block diffusion (BD3-LM, Arriola et al. 2025): masked diffusion within blocks, autoregression across them.

A sequence of ``L`` tokens is cut into ``L / B`` blocks of ``B`` tokens. The model is
``p(x) = prod_b p(x_b | x_<b)`` with each block's conditional a masked diffusion model, so the NELBO is the
sum of the per-block masked NELBOs, each conditioned on the clean earlier blocks::

    NELBO(x) = sum_b E_{t_b ~ U[0,1], x_{t_b} ~ q(. | x_b)} [ w(t_b) sum_{i in b : masked} -log p(x^i | x_{t_b}, x_<b) ]

Every block has its own time ``t_b``. One model call scores every block at once: the model sees the noisy
sequence and the clean one side by side, with a mask that lets noisy block ``b`` attend to itself and to
clean blocks before ``b`` only (:meth:`tokendiff.models.transformer.Transformer.forward_block_diffusion`).
``tests/test_block_diffusion.py`` checks the estimator by enumeration: with the exact conditionals of a
known joint, its expectation is ``-log p(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.objectives.times import sample_times
from tokendiff.processes.base import Kernel

__all__ = ["BlockDiffusionObjective"]


class BlockDiffusionObjective:
    """Per-token NELBO terms of block diffusion; ``model.forward_block_diffusion(xt, x0) -> logits (B, L, V)``.

    Args:
        kernel: the absorbing kernel (masks within each block).
        block_size: tokens per block ``B``; the sequence length must be a multiple of it.
        t_min: block times are drawn from ``[t_min, 1]`` (see :class:`~tokendiff.objectives.clean.CleanObjective`).
        antithetic: stratify the ``batch x blocks`` times (in a random order over the blocks).
    """

    name = "block"
    extra_tokens = 0

    def __init__(self, kernel: Kernel, block_size: int, t_min: float = 1e-3, antithetic: bool = True):
        if kernel.name != "absorbing":
            raise TokenDiffError(
                f"block diffusion masks tokens within blocks: it needs diffusion.process=absorbing, not {kernel.name}"
            )
        if block_size < 1:
            raise TokenDiffError(f"diffusion.block_size={block_size} must be >= 1, e.g. 16")
        self.kernel = kernel
        self.block_size = block_size
        self.t_min = t_min
        self.antithetic = antithetic

    def loss_terms(self, model, x0: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        """Per-token terms (B, L): ``w(t_b) * -log p(x0^i | x_t, x0_<b)`` at masked positions, 0 elsewhere."""
        B, L = x0.shape
        if L % self.block_size:
            raise TokenDiffError(f"sequence length {L} is not a multiple of diffusion.block_size={self.block_size}")
        blocks = L // self.block_size
        t = sample_times(B * blocks, self.t_min, self.antithetic, generator, x0.device)  # (B * blocks,)
        if self.antithetic:  # strata in a random order, so that a row's blocks do not share one stratum
            t = t[torch.randperm(B * blocks, generator=generator, device=x0.device)]
        t = t.view(B, blocks).repeat_interleave(self.block_size, dim=1)  # (B, L) each token its block's time
        schedule = self.kernel.schedule
        u = torch.rand(x0.shape, generator=generator, device=x0.device)  # (B, L)
        masked = u >= schedule.alpha(t)  # (B, L) masked with probability 1 - alpha(t_b)
        xt = torch.where(masked, torch.full_like(x0, self.kernel.mask_token_id), x0)
        logits = model.forward_block_diffusion(xt, x0)  # (B, L, V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")  # (B, L)
        weight = schedule.weight(t.double()).float()  # (B, L); float64: 1 - alpha loses small t in float32
        return torch.where(masked, weight * nll, torch.zeros_like(nll))
