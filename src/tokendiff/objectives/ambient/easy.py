"""The easy loss of ambient training: the clean NELBO integrand at levels ``t >= t_n``, from corrupted data.

Mask each observed token of ``y`` again with probability ``r = 1 - alpha(t)/q``: the result ``z`` has the
law of ``x_t``. Let ``N`` be the tokens observed in ``y`` and masked in ``z``; given ``z`` each masked token is
in ``N`` with probability ``(q - alpha)/(1 - alpha)`` independently of the values, so::

    L_easy = w(t) sum_{i in N} -log p_theta(y_i | z),     w(t) = -alpha'(t) / (q - alpha(t))

is an unbiased estimate of the clean-data NELBO integrand at ``t`` (``tests/test_ambient.py``).
"""

from __future__ import annotations

import torch

from tokendiff.processes.absorbing import scored_nll

__all__ = ["EasyLoss"]


class EasyLoss:
    """The easy loss, a part of :class:`~tokendiff.objectives.ambient.objective.AmbientObjective` (it reads the
    objective's ``kernel`` and observed fraction ``q``)."""

    def easy_terms_given(self, logits, y, z, t):
        """Deterministic part of the easy loss: (B, L) terms for given ``y``, ``z`` and ``t`` (B,)."""
        alpha, alpha_prime = self.kernel.alpha(t.double()), self.kernel.alpha_prime(t.double())
        weight = (-alpha_prime / (self.q - alpha)).float()[:, None]  # (B, 1)
        mask = self.kernel.mask_token_id
        newly_masked = (y != mask) & (z == mask)  # N: (B, L)
        return scored_nll(logits, y, newly_masked, weight)

    def remask(self, y, t, generator):
        """``z``: each observed token of ``y`` masked again with probability ``1 - alpha(t)/q``."""
        keep = (self.kernel.alpha(t.double()) / self.q).float()[:, None]  # (B, 1)
        u = torch.rand(y.shape, generator=generator, device=y.device)
        return torch.where(u < keep, y, torch.full_like(y, self.kernel.mask_token_id))

    def easy_terms(self, model, y, t, generator):
        """(B, L) easy terms of rows ``y`` at levels ``t`` (B,) above ``t_n``."""
        z = self.remask(y, t, generator)
        return self.easy_terms_given(model(z, t), y, z, t)
