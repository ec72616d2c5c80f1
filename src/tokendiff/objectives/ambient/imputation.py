"""The imputation loss of ambient training (``hard_loss=imputation``) at levels ``t < t_n``.

Draw the visible set of ``x_t`` independently of ``y``, fill its unobserved tokens with the model's own
draws given all of ``y`` (no gradient), and score the observed tokens it hides, with weight
``-alpha'/((1 - alpha) q)``. With exact imputations this is an unbiased estimate of the clean NELBO
integrand (tested by enumeration): Monte Carlo EM, whose fixed points include the data distribution. Its
gradient is a likelihood gradient on real pixels. :func:`tokendiff.evaluation.ambient.corrupted_nelbo`
uses the same estimator to select models on corrupted data.
"""

from __future__ import annotations

import torch

from tokendiff.processes.absorbing import scored_nll

__all__ = ["ImputationLoss"]


class ImputationLoss:
    """The imputation loss, a part of :class:`~tokendiff.objectives.ambient.objective.AmbientObjective` (it
    reads the objective's ``kernel``, observed fraction ``q`` and its ``fill``)."""

    def imputation_terms_given(self, logits, y, z, t):
        """(B, L) imputation terms: ``w(t) / q * -log p(y_i | z)`` on the observed tokens masked in ``z``."""
        alpha, alpha_prime = self.kernel.alpha(t.double()), self.kernel.alpha_prime(t.double())
        weight = (-alpha_prime / ((1.0 - alpha) * self.q)).float()[:, None]  # (B, 1)
        mask = self.kernel.mask_token_id
        targets = (y != mask) & (z == mask)
        return scored_nll(logits, y, targets, weight)

    def imputation_terms(self, model, y, t, generator):
        """The clean NELBO integrand at ``t < t_n`` with the missing data imputed by the model.

        Draw the visible set of ``x_t`` (each token w.p. ``alpha(t)``, independently of ``y``); fill its
        unobserved tokens with the model's own draws given all of ``y`` (no gradient); score the observed
        tokens it hides. Each masked token of ``z`` was observed w.p. ``q`` independently of the values,
        so with exact imputations (draws from ``p(x_missing | y)``) this is an unbiased estimate of the
        clean NELBO integrand (tested by enumeration): Monte Carlo EM, whose fixed points include the
        data distribution.
        """
        mask = self.kernel.mask_token_id
        alpha = self.kernel.alpha(t.double()).float()[:, None]  # (B, 1)
        visible = torch.rand(y.shape, generator=generator, device=y.device) < alpha
        observed = y != mask
        filled = self.fill(model, y, visible & ~observed, generator)
        z = torch.where(visible, filled, torch.full_like(y, mask))
        return self.imputation_terms_given(model(z, None), y, z, t)
