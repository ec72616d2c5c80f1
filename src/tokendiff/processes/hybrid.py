"""Hybrid mask + uniform noise (GIDD, von Rütte et al. 2025), as diffusers' ``HybridTokenDiffusionScheduler``.

Forward marginals (``_get_alpha_betapi`` in ``src/diffusers/schedulers/scheduling_hybrid_token_diffusion.py``)::

    B = 2^gamma p_uniform / (1 - p_uniform)
    c_t = B t^(gamma/2) (1 - t)^(gamma/2),      C_t = 1 + c_t
    alpha_t = (1 - t) / C_t
    m_t = beta_t pi_t = (t e_mask + c_t u) / C_t,   u uniform over the V real tokens

So at ``t = 1/2`` a token is uniform noise with probability ``p_uniform``; near ``t = 1`` it is masked.
``p_uniform = 0`` is masked diffusion with ``alpha_t = 1 - t`` exactly (tested). The ELBO is GIDD's
(:mod:`tokendiff.processes.interpolating`).

diffusers clamps times to ``[t_eps, 1 - t_eps]`` as a numerical guard; this kernel is exact on (0, 1)
(training draws ``t >= t_min > 0``, and ``t = 1`` needs no derivative), and ``t_eps`` is written to
``scheduler_config.json`` for diffusers.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import NUM_TRAIN_TIMESTEPS, check_vocab, diffusers_vocab
from tokendiff.processes.interpolating import InterpolatingKernel

__all__ = ["HybridKernel"]


class HybridKernel(InterpolatingKernel):
    """GIDD's mask + uniform interpolation.

    Args:
        vocab_size: ``V`` real tokens; id ``V`` is the mask.
        p_uniform: share of uniform noise at ``t = 1/2``, in [0, 1).
        gamma: shape exponent of the uniform bump ``c_t``, > 0.
        t_eps: diffusers' guard against t = 0 and 1 (written to the config, not used here).
    """

    name = "hybrid"

    def __init__(self, vocab_size: int, p_uniform: float = 0.0, gamma: float = 1.0, t_eps: float = 1e-4):
        if not 0.0 <= p_uniform < 1.0:
            raise TokenDiffError(f"diffusion.p_uniform={p_uniform} must lie in [0, 1), e.g. 0.1")
        if not 0 < gamma <= 100:  # 2^gamma below: beyond ~1000 it overflows, and past ~10 the bump is all but flat
            raise TokenDiffError(f"diffusion.gamma={gamma} must lie in (0, 100], e.g. 1.0")
        if vocab_size < 2 and p_uniform > 0:
            raise TokenDiffError(f"vocab_size={vocab_size}: uniform noise needs at least 2 tokens")
        super().__init__(vocab_size)
        self.p_uniform, self.gamma, self.t_eps = p_uniform, gamma, t_eps
        self.B = 2.0**gamma * p_uniform / (1.0 - p_uniform)
        self.time_conditioned = p_uniform > 0  # with p_uniform = 0 a real token is always clean
        self.reveals_are_final = p_uniform == 0
        # uniform noise grows like t^(gamma/2) near 0 (masks like t): evaluation's times follow it
        self.small_time_order = min(1.0, gamma / 2.0) if p_uniform > 0 else 1.0
        e_mask = F.one_hot(torch.tensor(vocab_size), self.num_ids).double()  # (K,)
        u = torch.zeros(self.num_ids, dtype=torch.float64)
        u[:vocab_size] = 1.0 / vocab_size
        self.e_mask, self.u = e_mask, u

    def _c(self, t):
        """``c_t`` and ``c_t'``."""
        half = self.gamma / 2.0
        c = self.B * t.pow(half) * (1.0 - t).pow(half)
        c_prime = self.B * half * (1.0 - 2.0 * t) * t.pow(half - 1.0) * (1.0 - t).pow(half - 1.0)
        return c, c_prime

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        c, _ = self._c(t)
        return (1.0 - t) / (1.0 + c)

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        c, c_prime = self._c(t)
        return (-(1.0 + c) - (1.0 - t) * c_prime) / (1.0 + c) ** 2

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        c, _ = self._c(t)
        return (t[..., None] * self.e_mask.to(t) + c[..., None] * self.u.to(t)) / (1.0 + c)[..., None]

    def noise_prime(self, t: torch.Tensor) -> torch.Tensor:
        c, c_prime = self._c(t)
        numerator = t[..., None] * self.e_mask.to(t) + c[..., None] * self.u.to(t)
        d_numerator = self.e_mask.to(t) + c_prime[..., None] * self.u.to(t)
        C = (1.0 + c)[..., None]
        return d_numerator / C - numerator * c_prime[..., None] / C**2

    def diffusion_settings(self) -> dict:
        """``diffusion.process=hybrid`` with ``p_uniform`` and ``gamma`` (no ``diffusion.schedule``: GIDD has its own
        alpha(t)); ``t_eps`` is diffusers' numerical guard, not a setting."""
        return {"process": self.name, "schedule": None, "p_uniform": self.p_uniform, "gamma": self.gamma}

    def describe(self) -> str:
        return f"_class_name=HybridTokenDiffusionScheduler with p_uniform={self.p_uniform}"

    def to_config(self) -> dict:
        """diffusers' ``HybridTokenDiffusionScheduler``."""
        return {
            "_class_name": "HybridTokenDiffusionScheduler",
            **diffusers_vocab(self),
            "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
            "t_eps": self.t_eps,
            "p_uniform": self.p_uniform,
            "clip_noise": 20.0,  # diffusers' bound on log B; B = 2^gamma p/(1-p) stays inside it for p < 0.99
            "gamma": self.gamma,
        }

    @classmethod
    def from_config(cls, config: dict, source: str = "scheduler_config.json") -> "HybridKernel":
        return cls(
            check_vocab(config, source),
            p_uniform=config.get("p_uniform", 0.0),
            gamma=config.get("gamma", 1.0),
            t_eps=config.get("t_eps", 1e-4),
        )
