"""Uniform-noise diffusion (UDLM, Schiff et al. 2025): a corrupted token is a uniformly drawn token.

Forward: ``q_t(. | x0) = alpha_t e_{x0} + (1 - alpha_t) u``, with ``u`` uniform over the ``V`` real
tokens (``exclude_mask_from_uniform=True``, the diffusers default) or over all ``V + 1`` ids including
the mask. Noise looks like data, so the denoiser must know ``t`` (``time_conditioned``), and every
position, not only masked ones, is scored and may change in the reverse process.

The NELBO is the UDLM diffusion loss: with ``N`` the size of the support of ``u`` and
``x_bar = N alpha_t x + (1 - alpha_t)`` (UDLM's notation, ``= N q_t``), the generic interpolating term of
:mod:`tokendiff.processes.interpolating` reduces to UDLM's ``alpha'/(N alpha) [N/x_bar_z - N/x_bar_theta_z
- sum_j (x_bar_j / x_bar_z) log(x_bar_theta_z x_bar_j / (x_bar_theta_j x_bar_z))]``: the jump rate is
``r_t(z) = -alpha_t' / (N alpha_t)`` for every ``z`` in the support.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import NUM_TRAIN_TIMESTEPS, check_vocab, diffusers_vocab, schedule_settings
from tokendiff.processes.interpolating import InterpolatingKernel
from tokendiff.schedules import Schedule, schedule_from_dict

__all__ = ["UniformKernel"]


class UniformKernel(InterpolatingKernel):
    """Uniform noise over ``vocab_size`` real tokens (and the mask id unless excluded).

    Args:
        vocab_size: ``V`` real tokens; id ``V`` is the mask (the placeholder of positions to generate).
        schedule: the noise schedule ``alpha(t)``.
        exclude_mask_from_uniform: draw noise over the real tokens only (diffusers' option of that name).
    """

    name = "uniform"
    time_conditioned = True

    def __init__(self, vocab_size: int, schedule: Schedule, exclude_mask_from_uniform: bool = True):
        if vocab_size < 2:
            raise TokenDiffError(f"vocab_size={vocab_size}: uniform noise needs at least 2 tokens")
        super().__init__(vocab_size)
        self.schedule = schedule
        self.exclude_mask_from_uniform = exclude_mask_from_uniform
        support = vocab_size if exclude_mask_from_uniform else vocab_size + 1
        self.uniform = torch.zeros(self.num_ids, dtype=torch.float64)  # (K,) the noise distribution u
        self.uniform[:support] = 1.0 / support

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha(t)

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha_prime(t)

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.alpha(t))[..., None] * self.uniform.to(t)

    def noise_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -self.alpha_prime(t)[..., None] * self.uniform.to(t)

    def diffusion_settings(self) -> dict:
        """``diffusion.process=uniform``, the schedule and ``exclude_mask_from_uniform``."""
        return {
            "process": self.name,
            **schedule_settings(self.schedule),
            "exclude_mask_from_uniform": self.exclude_mask_from_uniform,
        }

    def describe(self) -> str:
        return f"forward_process={self.name}"

    def to_config(self) -> dict:
        """diffusers' ``TokenDiffusionScheduler`` with ``forward_process="uniform"``."""
        return {
            "_class_name": "TokenDiffusionScheduler",
            **diffusers_vocab(self),
            "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
            **self.schedule.to_dict(),
            "forward_process": self.name,
            "exclude_mask_from_uniform": self.exclude_mask_from_uniform,
        }

    @classmethod
    def from_config(cls, config: dict, source: str = "scheduler_config.json") -> "UniformKernel":
        exclude = config.get("exclude_mask_from_uniform", True)
        return cls(check_vocab(config, source), schedule_from_dict(config), bool(exclude))
