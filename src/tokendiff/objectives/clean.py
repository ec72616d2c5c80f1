"""The NELBO of clean data under a kernel: the objective of every model trained on uncorrupted data."""

from __future__ import annotations

import torch

from tokendiff.objectives.base import Objective
from tokendiff.objectives.bound import BoundTerms, reconstruction_terms
from tokendiff.objectives.rules import check_count_kernel, check_estimator, check_t_min
from tokendiff.objectives.times import IMPORTANCE_SHARE, importance_times, sample_counts, sample_times
from tokendiff.processes.absorbing import scored_nll
from tokendiff.processes.base import Kernel
from tokendiff.processes.draws import random_subset

__all__ = ["CleanObjective"]


class CleanObjective(Objective):
    """Draw ``t`` and ``x_t ~ q_t(. | x0)``, score with the kernel's NELBO terms.

    Args:
        kernel: the forward process.
        t_min: times are drawn from ``[t_min, 1]``. The masked weight ``-alpha'/(1 - alpha)`` grows like
            ``1/t`` near 0, which gives the estimator a (log-)divergent variance; MDLM truncates at 1e-3.
            The bias this adds is the NELBO mass below ``t_min``, about ``t_min`` times a per-token
            cross-entropy (under 0.1% here).
        antithetic: draw the ``B`` times of a batch as ``(u + i/B) mod 1`` (low-discrepancy, MDLM
            ``_sample_t``): still uniform marginally, lower variance.

        estimator: ``time`` draws ``t`` and then the masks of ``x_t`` independently per token (the
            NELBO's own definition; every kernel). ``count`` (masks only): draw the number of masked
            tokens ``k`` uniformly from ``1..L`` (stratified over the batch when ``antithetic``), mask
            a uniformly drawn set of exactly ``k`` positions and weight each masked cross-entropy by
            ``L / k``. For masks the NELBO does not depend on the schedule: it is
            ``sum_k (1/k) E_{|S|=k} [sum_{i in S} -log p(x_i | x_{-S})]`` (integrate the binomial count
            against ``w(t)``: ``int C(L,k) t^(k-1) (1-t)^(L-k) dt = 1/k``), so this is an unbiased
            estimate of the same NELBO (with ``alpha(1) = 0``, no ``t_min``) without the binomial noise
            of the masked count, which at small ``t`` multiplies a few cross-entropies by ``1/t``
            (``tests/test_absorbing.py`` checks it by enumeration). ``bound``: the whole NELBO as evaluation
            estimates it (:meth:`bound_terms`: importance-weighted times on (0, 1] instead of uniform ones on
            ``[t_min, 1]``, which is then unused, and the t = 0 term when ``alpha(0) < 1``), so that the
            model is also trained at the small times where GIDD's hybrid noise holds a large part of its
            bound. Training only: evaluation always uses :meth:`bound_terms`
            (:func:`tokendiff.objectives.likelihood_objective`).

    With ``t ~ U[t_min, 1]``, ``terms.sum(1)`` is an unbiased estimate of ``(1 / (1 - t_min))`` times the
    NELBO integral over ``[t_min, 1]`` (MDLM's convention for training: the factor adds ~t_min relative, the
    part below t_min is left out, and so is the prior term). Evaluation calls :meth:`bound_terms`, which
    leaves nothing out (:mod:`tokendiff.objectives.bound`).
    """

    name = "clean"
    extra_tokens = 0  # a window of L tokens is one training sequence

    def __init__(self, kernel: Kernel, t_min: float = 1e-3, antithetic: bool = True, estimator: str = "time"):
        check_t_min(t_min)
        check_estimator(estimator)
        if estimator == "count":
            check_count_kernel(kernel.masked_diffusion, kernel.name)
        self.kernel = kernel
        self.t_min = t_min
        self.antithetic = antithetic
        self.estimator = estimator

    def sample_t(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """``n`` training times in ``[t_min, 1]``, shape ``(n,)``."""
        return sample_times(n, self.t_min, self.antithetic, generator, device)

    def loss_terms(self, model, x0: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        """Per-token NELBO terms of a batch ``x0`` (B, L); ``model(xt, t) -> logits (B, L, V)``."""
        if self.estimator == "count":
            return self._count_terms(model, x0, generator)
        if self.estimator == "bound":
            return self.bound_terms(model, x0, generator).total().float()
        t = self.sample_t(x0.shape[0], generator, x0.device)  # (B,)
        xt = self.kernel.corrupt(x0, t, generator)  # (B, L)
        return self.kernel.nelbo_terms(model(xt, t), x0, xt, t)  # (B, L)

    def bound_terms(
        self,
        model,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        split: float = 1e-3,
        share: float = IMPORTANCE_SHARE,
    ):
        """One draw of the whole bound's parts (:class:`~tokendiff.objectives.bound.BoundTerms`), (B, L) each:
        times from the importance density on (0, 1] (not ``t_min``), the t = 0 term when ``alpha(0) < 1``."""
        t, weight = importance_times(x0.shape[0], self.kernel.small_time_order, generator, x0.device, share)  # (B,)
        xt = self.kernel.corrupt(x0, t, generator)  # (B, L)
        terms = self.kernel.nelbo_terms(model(xt, t.float()), x0, xt, t).double() * weight[:, None]  # (B, L)
        below = (t < split)[:, None]  # (B, 1)
        zero_t = torch.zeros(x0.shape[0], device=x0.device)
        return BoundTerms(
            above=torch.where(below, torch.zeros_like(terms), terms),
            below=torch.where(below, terms, torch.zeros_like(terms)),
            reconstruction=reconstruction_terms(self.kernel, lambda z0: model(z0, zero_t), x0, generator),
        )

    def _count_terms(self, model, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The ``count`` estimator (class docstring): exactly ``k`` masked tokens, each weighted ``L / k``."""
        B, L = x0.shape
        k = sample_counts(torch.full((B,), L, device=x0.device), self.antithetic, generator, x0.device)  # (B,) 1..L
        u = torch.rand(B, L, generator=generator, device=x0.device)  # (B, L)
        masked = random_subset(u, None, k[:, None])  # (B, L): a uniformly drawn set of exactly k positions
        xt = torch.where(masked, torch.full_like(x0, self.kernel.mask_token_id), x0)
        t = k.to(torch.float32) / L  # (B,) the masked share; a time-agnostic model ignores it
        return scored_nll(model(xt, t), x0, masked, (L / k.to(torch.float32))[:, None])
