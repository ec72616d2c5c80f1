"""The entropy-bound step (the EB-sampler, Ben-Hamu et al. 2025, https://arxiv.org/abs/2505.24857).

Each step draws a candidate at every position and accepts the ``k`` lowest-entropy positions such that
``H_1 + ... + H_k - max(H_1, ..., H_k) <= entropy_bound`` (entropies in nats, sorted ascending). The left side
bounds the mutual information of the accepted tokens, so they are nearly independent given the rest and
drawing them together costs little; the most certain position is always accepted (its term is 0), so every
step advances. Confident stretches are written in one model call, uncertain ones a token at a time: the
number of steps adapts to the text instead of following a schedule.

Two modes, as diffusers 0.42's ``EntropyBoundScheduler`` and DiffusionGemma's sampler:

- **masks** (:class:`EntropyBoundStep`, ``sampling.strategy=entropy_bound``, masked kernels): only masked
  positions compete, the accepted ones are revealed for good, the rest stay masked; the last step reveals
  every remaining mask.
- **uniform** (:func:`entropy_bound_renoise`, the canvas of a uniform-noise model such as DiffusionGemma):
  every position competes, the accepted ones take their candidate and all others are redrawn uniformly
  (there is no mask to return to). diffusers' scheduler is this mode; tokendiff's own uniform kernel is
  refused, since its reverse process is the kernel's posterior, not a fresh canvas each step.

The temperature anneal of diffusers' scheduler (``t_max`` to ``t_min``) is the loop's
``sampling.temperature_start``/``temperature_end`` (:func:`tokendiff.samplers.diffusion.step_temperature`), so
the entropies here are those of the distribution the candidates are drawn from, as there.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.noise import gumbel_argmax
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["EntropyBoundStep", "entropy_bound_accept", "entropy_bound_renoise", "token_entropy"]


def token_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each position's distribution, (B, L, V) log-probabilities -> (B, L)."""
    p = log_probs.exp()
    return -torch.where(p > 0, p * log_probs, torch.zeros_like(p)).sum(-1)


def entropy_bound_accept(log_probs: torch.Tensor, bound: float, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """The accepted positions (B, L) bool: among ``eligible`` (B, L) (default all), the lowest-entropy ones whose
    cumulative entropy, less the largest of them, stays within ``bound``."""
    entropy = token_entropy(log_probs)  # (B, L)
    if eligible is not None:
        entropy = entropy.masked_fill(~eligible, float("inf"))
    ordered, order = torch.sort(entropy, dim=-1)  # ascending: ordered[:, j] is the largest of the first j + 1
    cumulative = ordered.cumsum(-1)
    # an ineligible position is +inf: inf - inf is nan, and nan <= bound is False
    take = cumulative - ordered <= bound  # (B, L) in sorted order
    return torch.zeros_like(take).scatter(-1, order, take)


def entropy_bound_renoise(
    log_probs: torch.Tensor, candidates: torch.Tensor, noise: torch.Tensor, bound: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform mode's step: ``(next canvas, accepted)``, both (B, L): the accepted positions take their
    ``candidates`` (drawn from ``log_probs``), every other one its ``noise`` token (drawn uniformly)."""
    accepted = entropy_bound_accept(log_probs, bound)
    return torch.where(accepted, candidates, noise), accepted


class EntropyBoundStep:
    """Reveal the masks the entropy bound accepts (mask mode of the module docstring)."""

    remasks = False
    sweeps = 0

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        if not kernel.reveals_are_final:
            raise TokenDiffError(
                f"sampling.strategy=entropy_bound reveals masks, which diffusion.process={kernel.name} does not keep "
                "(its noise is uniform: no masks); use sampling.strategy=ddim or ancestral"
            )
        self.mask_id = kernel.mask_token_id
        self.bound = float(settings.entropy_bound)

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        candidates = gumbel_argmax(log_p_x0, state.generators)  # (B, L)
        scored = state.scoring_log_probs(log_p_x0)  # greedy: the entropies of the raw logits (a point mass has 0)
        return self.update(scored, state.x, candidates, state.free, last=bool(state.alpha_s >= 1.0))

    def update(
        self, log_p_x0: torch.Tensor, x: torch.Tensor, candidates: torch.Tensor, free: torch.Tensor, last: bool = False
    ) -> torch.Tensor:
        """``x_s`` (B, L) from the drawn ``candidates``: the accepted masks among ``free`` revealed (every one of
        them on the ``last`` step)."""
        masked = (x == self.mask_id) & free  # (B, L)
        accept = masked if last else entropy_bound_accept(log_p_x0, self.bound, masked)
        return torch.where(accept, candidates, x)
