"""The NELBO that evaluation reports: an upper bound on ``-log p(x)`` for every kernel and schedule.

Per sequence ``x`` the bound is::

    NELBO(x) = E_{z0 ~ q_0(.|x)} [-log p(x | z0)]              reconstruction: 0 when alpha(0) = 1
             + int_0^1 E_{x_t ~ q_t(.|x)} [sum_i term_i(x_t, t)] dt   the kernel's continuous-time terms
             + sum_i KL(q_1(. | x_i) || p(x_1))                 the prior term (evaluation adds it)

Nothing is left out: the integral covers all of [0, 1] with times drawn from
:func:`~tokendiff.objectives.times.importance_times` (finite variance down to t = 0, where the masked
weight grows like 1/t and GIDD's uniform bump like t^(gamma/2 - 1)), and schedules that start at
``alpha(0) < 1`` (diffusers' ``linear`` and ``cosine``, ``geometric``) pay for the tokens already
corrupted at t = 0 with the reconstruction term. Training keeps MDLM's uniform times on ``[t_min, 1]``
(:class:`~tokendiff.objectives.clean.CleanObjective`): that is a surrogate, never printed as a bound.

The part of the integral below ``split`` (``eval.t_min``) is kept apart (``below``), so that the truncated
estimate MDLM-style papers print (``int_{t_min}^1`` plus the prior) can be read off beside the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokendiff.processes.base import Kernel

__all__ = ["BoundTerms", "starts_clean", "reconstruction_terms"]


@dataclass
class BoundTerms:
    """One Monte Carlo draw of the bound's parts, each (B, L) float64 nats per token position."""

    above: torch.Tensor  # importance-weighted continuous-time terms at times >= split
    below: torch.Tensor  # the same at times < split
    reconstruction: torch.Tensor  # -log p(x_i | z0), 0 when alpha(0) = 1

    def total(self) -> torch.Tensor:
        return self.above + self.below + self.reconstruction


def starts_clean(kernel: Kernel) -> bool:
    """Whether ``alpha(0) = 1`` exactly, so that the bound has no reconstruction term."""
    return float(kernel.alpha(torch.zeros(1, dtype=torch.float64))[0]) == 1.0


def reconstruction_terms(kernel: Kernel, logits_fn, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """``-log p(x0_i | z0)`` for one draw ``z0 ~ q_0(. | x0)``, (B, L) float64 (zeros, and no model call,
    when ``alpha(0) = 1``). ``logits_fn(z0) -> (B, L, V)``: the denoiser at t = 0."""
    if starts_clean(kernel):
        return torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
    zero = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    z0 = kernel.corrupt(x0, zero, generator)  # (B, L)
    return kernel.reconstruction_terms(logits_fn(z0), x0, z0)
