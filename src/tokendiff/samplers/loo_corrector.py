"""The leave-one-out Gibbs corrector of uniform noise ("Uniform Diffusion Models Revisited", arXiv 2605.22765;
diffusers' ``DiscreteDDIMScheduler.step_correct``).

At time ``s`` the exact one-coordinate conditional of the forward marginal is
``p_s(x^l | x^{-l}) = alpha_s p(x0^l | x^{-l}) + (1 - alpha_s) / N``: it needs the clean-token distribution
given every *other* position, the leave-one-out (LOO) denoiser. A plain denoiser also sees ``x^l`` itself,
which under uniform noise raises its own token's odds by ``1 + N alpha_s / (1 - alpha_s)`` (the likelihood
ratio of ``x^l`` under "clean" against "noise"); dividing that out gives the LOO denoiser (eq. 13 of the paper).
tokendiff's own uniform models already output the LOO law (it is the exact denoiser of the NELBO they are
trained on), so their sweep skips the shift.

A sweep resamples ``corrector_k`` positions of each row from that conditional, the others held: a Gibbs
update, which leaves ``p_s`` invariant for an exact model, so it repairs the sample at no training cost.
Positions are chosen least-confident first by a Gumbel top-k at temperature ``corrector_tau`` over a score:
``lowest_log_margin`` (the current token's log-probability minus the best other's), ``lowest_maxprob``,
``lowest_current_prob`` or ``random``.

The functions are the sweep given its draws (:func:`loo_conditional`, :func:`select_positions`); the class draws
them with the loop's per-row generators. The loop runs the sweeps (each on a fresh model call) after every
corrected step, folded into the budget of ``sampling.steps`` model calls (:func:`corrector_budget`), so a
corrected run costs what a plain one does.
"""

from __future__ import annotations

import math

import torch

from tokendiff.samplers.noise import gumbel_argmax, row_uniform
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["LeaveOneOutCorrector", "corrector_budget", "loo_conditional", "selection_scores", "select_positions"]


def corrector_budget(steps: int, sweeps: int) -> tuple[int, int]:
    """``(predictor steps, corrected steps)`` of a budget of ``steps`` model calls, as diffusers' DiffusionGemma
    pipeline folds them: the first ``corrected`` predictor steps each run ``sweeps`` extra calls, so the total
    stays ``steps`` and the last step is never corrected."""
    if sweeps <= 0:
        return steps, 0
    corrected = (steps - 1) // (1 + sweeps)
    return steps - corrected * sweeps, corrected


def loo_conditional(
    log_p_x0: torch.Tensor, x: torch.Tensor, alpha_s: float, support: int, shift: bool = True
) -> torch.Tensor:
    """``log p_s(x^l | x^{-l})`` per position, (B, L, V) float64, from the plain denoiser's ``log_p_x0`` of ``x``
    (B, L) at time ``s``, for uniform noise over the first ``support`` ids. ``shift=False``: ``log_p_x0`` is
    already leave-one-out (tokendiff's models: the NELBO's exact denoiser is that law)."""
    log_p = log_p_x0.double()
    if shift and 0.0 < alpha_s < 1.0:
        delta = math.log1p(support * alpha_s / (1.0 - alpha_s))  # the log odds its own token gained
        log_p = log_p.scatter_add(-1, x.unsqueeze(-1), torch.full(x.shape + (1,), -delta, dtype=torch.float64))
    loo = torch.log_softmax(log_p, dim=-1)  # (B, L, V) the leave-one-out denoiser
    if alpha_s >= 1.0:
        return loo
    floor = torch.full_like(loo, math.log1p(-alpha_s) - math.log(support))
    floor[..., support:] = float("-inf")  # no noise outside the support
    if alpha_s <= 0.0:
        return floor
    return torch.logaddexp(math.log(alpha_s) + loo, floor)


def selection_scores(cond: torch.Tensor, x: torch.Tensor, selection: str) -> torch.Tensor:
    """How much each position (B, L) wants resampling (higher first) under ``selection``, from the conditional
    ``cond`` (B, L, V) of the current tokens ``x``; ``random``: zeros (the Gumbel draw alone decides)."""
    if selection == "random":
        return torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    if selection == "lowest_maxprob":
        return -cond.max(dim=-1).values
    current = cond.gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, L)
    if selection == "lowest_current_prob":
        return -current
    others = cond.scatter(-1, x.unsqueeze(-1), float("-inf")).max(dim=-1).values
    return -(current - others)  # lowest_log_margin


def select_positions(scores: torch.Tensor, k: int, tau: float, u: torch.Tensor) -> torch.Tensor:
    """``k`` positions per row, (B, k): the top ``k`` of ``scores / tau + Gumbel(u)`` (Gumbel top-k: drawn
    without replacement with probabilities proportional to ``exp(scores / tau)``); ``u`` (B, L) uniforms."""
    keys = scores / tau - torch.log(-torch.log(u))
    return torch.topk(keys, k=min(k, scores.shape[-1]), dim=-1).indices


class LeaveOneOutCorrector:
    """One sweep at a time (``DDIMStep.correct``): resample ``corrector_k`` positions of each row's free ones."""

    def __init__(self, support: int, settings: SamplingSettings, model_is_loo: bool = False):
        self.support = support
        self.shift = not model_is_loo  # a plain denoiser's output needs the leave-one-out shift
        self.k = int(settings.corrector_k)
        self.selection = settings.corrector_selection
        self.tau = float(settings.corrector_tau)

    def sweep(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        x = state.x
        cond = loo_conditional(log_p_x0, x, float(state.alpha_s), self.support, self.shift)  # (B, L, V)
        scores = selection_scores(cond, x, self.selection).masked_fill(~state.free, float("-inf"))
        u = row_uniform(state.generators, (x.shape[1],), x.device)  # (B, L)
        positions = select_positions(scores, self.k, self.tau, u)  # (B, k)
        chosen = cond.gather(1, positions.unsqueeze(-1).expand(-1, -1, cond.shape[-1]))  # (B, k, V)
        return self.apply(x, positions, gumbel_argmax(chosen, state.generators), state.free)

    @staticmethod
    def apply(x: torch.Tensor, positions: torch.Tensor, values: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """``x`` with ``values`` (B, k) written at ``positions`` (B, k) where they are ``free``."""
        allowed = free.gather(1, positions)  # a row with fewer than k free positions picks held ones too
        return x.scatter(1, positions, torch.where(allowed, values, x.gather(1, positions)))
