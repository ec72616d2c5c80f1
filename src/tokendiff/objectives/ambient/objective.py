"""The ambient objective: which rows get the easy loss, which the hard one, and at which levels.

The losses themselves live one to a file (:mod:`~tokendiff.objectives.ambient.easy`,
:mod:`~tokendiff.objectives.ambient.consistency`, :mod:`~tokendiff.objectives.ambient.imputation`,
:mod:`~tokendiff.objectives.ambient.em`); :class:`AmbientObjective` holds their settings, checks them once
and combines them (the package docstring has the setting); their value rules live in
:class:`~tokendiff.objectives.ambient.settings.AmbientSettings`.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.objectives.ambient.consistency import ConsistencyLoss
from tokendiff.objectives.ambient.easy import EasyLoss
from tokendiff.objectives.ambient.em import EMLoss
from tokendiff.objectives.ambient.fill import fill
from tokendiff.objectives.ambient.imputation import ImputationLoss
from tokendiff.objectives.ambient.settings import HARD_LOSSES, AmbientSettings
from tokendiff.objectives.base import Objective
from tokendiff.data import corruption
from tokendiff.objectives.rules import check_t_min
from tokendiff.objectives.times import stratified_uniform
from tokendiff.processes.base import Kernel

__all__ = ["AmbientObjective", "level_of_alpha", "HARD_LOSSES"]


def level_of_alpha(kernel: Kernel, q: float, iters: int = 80) -> float:
    """The time ``t_n`` with ``alpha(t_n) = q``, by bisection (alpha decreases in t)."""
    lo, hi = 0.0, 1.0
    if not float(kernel.alpha(torch.tensor(1.0, dtype=torch.float64))) <= q <= 1.0:
        raise TokenDiffError(f"data.observed_fraction={q} is below alpha(1) of the schedule; use a larger value")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float(kernel.alpha(torch.tensor(mid, dtype=torch.float64))) > q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class AmbientObjective(EasyLoss, ConsistencyLoss, ImputationLoss, EMLoss, Objective):
    """Easy loss above the corruption level ``t_n``, consistency loss below it.

    Args:
        kernel: the clean masking kernel (:class:`~tokendiff.processes.AbsorbingKernel`); also used for
            evaluation.
        observed_fraction: ``q``, the probability that a token of the data was observed.
        consistency_weight: weight of the hard loss below ``t_n`` (0 = easy loss only).
        descent_steps: forward passes (no gradient) that reach the anchor from ``y`` (consistency) or
            draw the imputations (imputation).
        easy_fraction: share of each batch trained with the easy loss (the rest: the hard loss).
        hard_loss: below ``t_n``, ``consistency`` (tower property), ``imputation`` (Monte Carlo EM) or ``em``
            (Monte Carlo EM with an imputation buffer).
        divergence: of the consistency loss, ``squared`` (probabilities) or ``kl``.
        hard_start: share of training (``progress``) with the easy loss alone, before the hard loss.
        t_min: truncation of the weights that diverge at ``t_n`` and at 0 (see :class:`CleanObjective`).
        hard_batch: > 0: the easy loss on every row and the hard loss on this share of the rows on top
            (0: ``easy_fraction`` splits the rows between the two).
        imputed_weight, impute_rounds, refresh, gibbs_share: of ``hard_loss=em``
            (:mod:`~tokendiff.objectives.ambient.em`).
        consistency_reveal: > 0: the consistency loss reveals this share of the anchor's masked tokens (drawn by
            the model's sequential sampler, ``descent_steps`` rounds) twice independently and scores the
            product of the two residuals (:meth:`residual_terms`); 0: the exact one-token reveal.
        consistency_max_masked: the consistency anchors are drawn at levels with at most this share of the
            tokens masked (1: every level below ``t_n``). Every state it scores then lies at or below that
            share, so the noisy levels, which decide a sample's global shape, keep the easy loss alone. The
            minimizers are unchanged (the true conditionals make every term zero).
    """

    name = "ambient"
    extra_tokens = 0
    reports_train_nelbo = False  # corrupted training sequences have no clean NELBO

    def __init__(
        self,
        kernel: Kernel,
        observed_fraction: float,
        consistency_weight: float = 1.0,
        descent_steps: int = 2,
        easy_fraction: float = 0.5,
        hard_loss: str = "consistency",
        divergence: str = "kl",
        hard_start: float = 0.0,
        t_min: float = 1e-3,
        hard_batch: float = 0.0,
        imputed_weight: float = 1.0,
        impute_rounds: int = 16,
        refresh: float = 0.25,
        gibbs_share: float = 0.1,
        consistency_reveal: float = 0.0,
        consistency_max_masked: float = 1.0,
    ):
        corruption.check_observed_fraction(observed_fraction)  # the corruption's own rule
        check_t_min(t_min)
        self.settings = AmbientSettings(
            consistency_weight=consistency_weight,
            descent_steps=descent_steps,
            easy_fraction=easy_fraction,
            hard_loss=hard_loss,
            divergence=divergence,
            hard_start=hard_start,
            hard_batch=hard_batch,
            imputed_weight=imputed_weight,
            impute_rounds=impute_rounds,
            refresh=refresh,
            gibbs_share=gibbs_share,
            consistency_reveal=consistency_reveal,
            consistency_max_masked=consistency_max_masked,
        )  # every value rule, with the message the config's ambient section gives too
        if consistency_max_masked < 1.0 and hard_loss != "consistency":
            raise TokenDiffError(
                f"ambient.consistency_max_masked={consistency_max_masked} is for ambient.hard_loss=consistency; "
                f"{hard_loss} estimates the NELBO over every level below t_n, so leave it at 1"
            )
        self.kernel = kernel
        self.vocab_size = kernel.vocab_size
        self.mask_token_id = kernel.mask_token_id
        self.t_min = t_min
        self.q = observed_fraction
        self.t_n = level_of_alpha(kernel, observed_fraction)
        # the highest anchor level: 1 - alpha(t) = consistency_max_masked, and never above t_n
        self.t_consistency = level_of_alpha(kernel, max(observed_fraction, 1.0 - consistency_max_masked))
        self.consistency_weight, self.descent_steps = consistency_weight, descent_steps
        self.easy_fraction, self.hard_start, self.hard_batch = easy_fraction, hard_start, hard_batch
        self.hard_loss, self.divergence, self.consistency_reveal = hard_loss, divergence, consistency_reveal
        self.imputed_weight, self.impute_rounds = imputed_weight, impute_rounds
        self.refresh, self.gibbs_share = refresh, gibbs_share
        self.buffer: dict[bytes, torch.Tensor] = {}  # em: completed copy of each training sequence, by its y
        self.imputer = None  # em: the model that imputes (the trainer binds its EMA weights)

    def fill(self, model, z, positions, generator, rounds: int | None = None):
        """Reveal the masked tokens ``positions`` of ``z`` with the model's own draws
        (:func:`~tokendiff.objectives.ambient.fill.fill`), in ``rounds`` rounds (default ``descent_steps``)."""
        return fill(model, z, positions, generator, rounds or self.descent_steps)

    def loss_terms(self, model, y, generator=None, progress: float = 1.0):
        """(B, L) terms: a share ``easy_fraction`` of the rows gets the easy loss at a time drawn
        uniformly in ``[t_n, 1]``, the others the weighted hard loss at a level uniform in ``[0, t_n)``.
        Drawing ``t ~ U[0, 1]`` instead would give the easy loss only ``1 - t_n`` = 10% of the rows at
        q = 0.1, and with it almost all of the data's signal. With ``hard_batch > 0`` every row gets the
        easy loss and a share ``hard_batch`` of them the hard loss as well."""
        B = y.shape[0]
        u = stratified_uniform(B, generator, y.device)  # antithetic over [0, 1)
        # the hard loss needs a model that already knows the data level: off for the first hard_start
        hard_on = self.consistency_weight > 0 and progress >= self.hard_start
        on_top = self.hard_batch > 0
        p = 1.0 if on_top or not hard_on else self.easy_fraction
        high = u < p
        terms = torch.zeros(y.shape, device=y.device)
        if high.any():
            t_high = self.t_n + (1.0 - self.t_n) * (u[high] / p)
            # the weight -alpha'/(q - alpha) diverges at t_n like 1/t at 0 for clean data: truncate the
            # same way (CleanObjective.t_min), a bias below 0.1%
            t_high = t_high.clamp(min=self.t_n + self.t_min * (1 - self.t_n))
            terms[high] = self.easy_terms(model, y[high], t_high, generator)
        if on_top and hard_on:  # a sub-batch with the hard loss too, at levels stratified over [0, t_n)
            k = max(1, round(self.hard_batch * B))
            rows = torch.randperm(B, generator=generator, device=y.device)[:k]
            levels = stratified_uniform(k, generator, y.device)
            terms[rows] += self.consistency_weight * self._hard(model, y[rows], levels, generator)
        elif (~high).any():
            terms[~high] = self.consistency_weight * self._hard(model, y[~high], (u[~high] - p) / (1.0 - p), generator)
        return terms

    def _hard(self, model, y, u, generator):
        """The hard loss of rows ``y`` at levels ``t = t_n u`` (``u`` in [0, 1); consistency: up to the level
        of ``consistency_max_masked``)."""
        if self.hard_loss == "consistency":
            return self.consistency_terms(model, y, self.t_consistency * u, generator)
        t_low = self.t_n * u
        # the weight -alpha'/((1 - alpha) q) diverges at t = 0 like 1/t: the same truncation
        t_low = t_low.clamp(min=self.t_min * self.t_n)
        if self.hard_loss == "imputation":
            return self.imputation_terms(model, y, t_low, generator)
        return self.em_terms(model, y, t_low, generator)
