"""The consistency loss of ambient training (``hard_loss=consistency``, the default) at levels ``t < t_n``.

The tower property of the true conditionals: for any partly masked ``z`` and masked token ``j``,
``p(x_i | z) = sum_v p(x_j = v | z) p(x_i | z, x_j = v)`` for every other masked ``i``. With a one-token
reveal the expectation is exact in ``V`` forward passes, so::

    L_cons = m sum_{i masked, i != j} D( g_i, sum_v g_j(v) f^v_i ),   D = KL or squared error
    g = p_theta(. | z) (stop-gradient: the anchor),  f^v = p_theta(. | z, x_j = v) (gradient),
    m = number of masked tokens of z

The gradient goes through the lower-noise side, the levels no data constrains. To reach levels
far below ``t_n``, ``z`` is reached from ``y`` by the model's own reverse sampler (no gradient),
revealing tokens until a fraction ``1 - alpha(t)`` remains masked. The loss is zero for the exact
conditionals of any distribution and not for others (tested). The factor ``m``: a one-token reveal
links two levels one token apart, so without it the term is tiny; on MNIST its gradient was ~300x
below the data term's and it taught the low-noise levels nothing (docs/mnist_ambient.md).

With ``consistency_reveal > 0`` a share of the anchor's masked tokens is revealed instead, twice
independently, and the product of the two residuals is scored (:meth:`ConsistencyLoss.residual_terms`).
"""

from __future__ import annotations

import torch

from tokendiff.processes.draws import random_subset

__all__ = ["ConsistencyLoss"]


class ConsistencyLoss:
    """The consistency loss, a part of :class:`~tokendiff.objectives.ambient.objective.AmbientObjective` (it
    reads the objective's ``kernel``, ``divergence``, ``consistency_reveal`` and its ``fill``)."""

    @torch.no_grad()
    def descend(self, model, y, t, generator):
        """Reveal tokens of ``y`` with the model's own predictions until ~``1 - alpha(t)`` stay masked."""
        L = y.shape[1]
        masked = y == self.kernel.mask_token_id
        target = torch.round(L * (1.0 - self.kernel.alpha(t.double()))).long()  # (B,) masks to keep
        n_reveal = (masked.sum(1) - target).clamp(min=0)  # (B,)
        u = torch.rand(y.shape, generator=generator, device=y.device)
        return self.fill(model, y, random_subset(u, masked, n_reveal[:, None]), generator)

    def consistency_terms_given(self, model, z, j):
        """(B, L) consistency terms for anchors ``z`` (B, L) and revealed positions ``j`` (B,)."""
        B, L = z.shape
        with torch.no_grad():
            g = torch.softmax(model(z, None).float(), dim=-1)  # (B, L, V) anchor, stop-gradient
        rows = torch.arange(B, device=z.device)
        expected = torch.zeros_like(g)  # (B, L, V): sum_v g_j(v) f^v
        for v in range(self.kernel.vocab_size):
            z_v = z.clone()
            z_v[rows, j] = v
            f_v = torch.softmax(model(z_v, None).float(), dim=-1)  # (B, L, V) with gradient
            expected = expected + g[rows, j, v][:, None, None] * f_v
        scored = z == self.kernel.mask_token_id  # (B, L)
        scored[rows, j] = False
        if self.divergence == "kl":  # KL(g || expected): both sides exact, so no sampling bias
            log_g = torch.log(g.clamp(min=1e-12))
            div = (g * (log_g - torch.log(expected.clamp(min=1e-12)))).sum(-1)  # (B, L)
        else:
            div = ((expected - g) ** 2).sum(-1)  # (B, L)
        return torch.where(scored, div, torch.zeros_like(div))

    def residual_terms(self, model, z, generator):
        """(B, L) multi-token consistency terms of anchors ``z``: reveal a uniformly drawn share
        ``consistency_reveal`` of the masked tokens (k of m), twice, with independent draws of the model's
        sampler (no gradient), and score ``m/k (f' - g) . (f'' - g)`` on the tokens still masked: an
        unbiased estimate of ``m/k ||E[f] - g||^2`` (independent draws), zero in expectation for the exact
        conditionals of any distribution (tower property), with the gradient through both ``f``."""
        masked = z == self.kernel.mask_token_id  # (B, L)
        m = masked.sum(1, keepdim=True)  # (B, 1)
        k = (m.double() * self.consistency_reveal).round().long().clamp(min=1)
        k = torch.minimum(k, (m - 1).clamp(min=0))  # leave at least one token to score
        reveal = random_subset(torch.rand(z.shape, generator=generator, device=z.device), masked, k)  # (B, L)
        with torch.no_grad():
            g = torch.softmax(model(z, None).float(), dim=-1)  # (B, L, V) anchor, stop-gradient
            first = self.fill(model, z, reveal, generator)
            second = self.fill(model, z, reveal, generator)
        f1 = torch.softmax(model(first, None).float(), dim=-1)  # (B, L, V) with gradient
        f2 = torch.softmax(model(second, None).float(), dim=-1)
        product = ((f1 - g) * (f2 - g)).sum(-1)  # (B, L)
        scale = (m.float() / k.clamp(min=1).float()) * (k > 0)  # a k-of-m reveal moves k/m of the way
        return torch.where(masked & ~reveal, product, torch.zeros_like(product)) * scale

    def consistency_terms(self, model, y, t, generator):
        """(B, L) consistency terms of rows ``y`` at anchor levels ``t`` (B,) below ``t_n``."""
        z = self.descend(model, y, t, generator)  # (B, L) anchors below t_n
        if self.consistency_reveal > 0:
            return self.residual_terms(model, z, generator)
        masked = z == self.kernel.mask_token_id
        # one masked position per row, uniformly (rows with fewer than two masks contribute nothing)
        scores = torch.rand(z.shape, generator=generator, device=z.device).masked_fill(~masked, -1.0)
        j = scores.argmax(1)  # (B,)
        terms = self.consistency_terms_given(model, z, j)
        # A one-token reveal moves 1/m of the way through the m masked tokens, so the violation it
        # shows is small: scale by m (violation per unit of masking), which puts the gradient of
        # consistency_weight=1 on the scale of the data term's (bench/mnist_loss_scale.py). A positive
        # weight per state: the minimizers (the conditionals of a distribution) are unchanged.
        m = masked.sum(1, keepdim=True)  # (B, 1)
        return terms * m * (m >= 2)
