"""Block diffusion (BD3-LM, Arriola et al. 2025): diffusion within blocks, autoregression across them.

A sequence of ``L`` tokens is cut into ``L / B`` blocks of ``B`` tokens. The model is
``p(x) = prod_b p(x_b | x_<b)`` with each block's conditional a diffusion model, so the NELBO is the
sum of the per-block NELBOs, each conditioned on the clean earlier blocks. With masks (BD3-LM)::

    NELBO(x) = sum_b E_{t_b ~ U[0,1], x_{t_b} ~ q(. | x_b)} [ w(t_b) sum_{i in b : masked} -log p(x^i | x_{t_b}, x_<b) ]

and with any other kernel (uniform noise, as DiffusionGemma) the kernel's own continuous-time integrand,
reconstruction and prior terms (:mod:`tokendiff.objectives.bound`), block by block::

    NELBO(x) = sum_b ( E_{z0} [-log p(x_b | z0_b, x_<b)] + int_0^1 E_{x_t ~ q_t(.|x_b)} [sum_{i in b} term_i] dt
                       + sum_{i in b} KL(q_1(. | x^i) || p(x_1)) )

Every block has its own time ``t_b``. One model call scores every block at once: the model sees the noisy
sequence and the clean one side by side, with a mask that lets noisy block ``b`` attend to itself and to
clean blocks before ``b`` only (:meth:`tokendiff.models.transformer.Transformer.forward_block_diffusion`).
A time-conditioned model is told each block's time at its positions, ``t`` (B, L), and sees the clean half at
``t = 0``. ``tests/test_block_diffusion.py`` (masks) and ``tests/test_block_uniform.py`` (uniform noise) check
the estimator by enumeration: with the exact conditionals of a known joint, its expectation is ``-log p(x)``
(for uniform noise plus the prior's mismatch, as for the whole-sequence NELBO).
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.objectives.base import Objective
from tokendiff.objectives.bound import BoundTerms, reconstruction_terms
from tokendiff.objectives.rules import check_block_kernel, check_block_size, check_t_min
from tokendiff.objectives.times import IMPORTANCE_SHARE, importance_times, sample_times
from tokendiff.processes.absorbing import scored_nll
from tokendiff.processes.base import Kernel
from tokendiff.processes.denoisers import loo_from_posterior

__all__ = ["BlockDiffusionObjective"]


class BlockDiffusionObjective(Objective):
    """Per-token NELBO terms of block diffusion; ``model.forward_block_diffusion(xt, x0) -> logits (B, L, V)``.

    Args:
        kernel: the absorbing kernel (masks within each block, a time-agnostic model: ``t`` is not passed) or the
            uniform one (``model.forward_block_diffusion(xt, x0, t)`` with ``t`` (B, L) each block's time). A model
            whose ``predicts_posterior`` is true (DiffusionGemma) predicts the full posterior ``p(x0_i | x_t)``; its
            logits are turned into the leave-one-out law the kernel's NELBO reads
            (:func:`~tokendiff.processes.denoisers.loo_from_posterior`).
        block_size: tokens per block ``B``; the sequence length must be a multiple of it.
        t_min: block times are drawn from ``[t_min, 1]`` (see :class:`~tokendiff.objectives.clean.CleanObjective`).
        antithetic: stratify the ``batch x blocks`` times (in a random order over the blocks).
    """

    name = "block"
    extra_tokens = 0
    # its training sequences are clean, but block runs have never reported the training split's NELBO;
    # True would add eval/train_loss to their logs
    reports_train_nelbo = False

    def __init__(self, kernel: Kernel, block_size: int, t_min: float = 1e-3, antithetic: bool = True):
        check_block_kernel(kernel.name)  # masks (the model sees no t) or uniform noise (the model sees t)
        check_block_size(block_size)
        check_t_min(t_min)
        self.kernel = kernel
        self.block_size = block_size
        self.t_min = t_min
        self.antithetic = antithetic

    def _blocks(self, x0: torch.Tensor) -> int:
        L = x0.shape[1]
        if L % self.block_size:
            raise TokenDiffError(f"sequence length {L} is not a multiple of diffusion.block_size={self.block_size}")
        return L // self.block_size

    def _terms(self, model, x0: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor:
        """``w(t_b) * -log p(x0^i | x_t, x0_<b)`` at masked positions, 0 elsewhere; ``t`` (B, blocks)."""
        t = t.repeat_interleave(self.block_size, dim=1)  # (B, L) each token its block's time
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=t.dtype)  # (B, L)
        masked = u >= self.kernel.alpha(t)  # (B, L) masked with probability 1 - alpha(t_b)
        xt = torch.where(masked, torch.full_like(x0, self.kernel.mask_token_id), x0)
        logits = model.forward_block_diffusion(xt, x0)  # (B, L, V)
        weight = self.kernel.nelbo_weight(t.double())  # (B, L); float64: 1 - alpha loses small t in float32
        # evaluation: times down to ~1e-60, weights beyond float32's range
        weight = weight if t.dtype == torch.float64 else weight.float()
        return scored_nll(logits, x0, masked, weight)

    def kernel_terms(self, model, x0: torch.Tensor, t: torch.Tensor, generator, keep=None) -> torch.Tensor:
        """The kernel's NELBO integrand of every token at its block's time, (B, L); ``t`` (B, blocks).

        Each block is one row of the kernel's calls (``corrupt`` and ``nelbo_terms`` take one time per row):
        ``x_t`` of block ``b`` is drawn from ``q_{t_b}(. | x0_b)``, and its terms are scored with the logits of
        block ``b`` given the clean earlier blocks. The model is told the times per position (B, L).
        ``keep`` (B, L) bool: positions left clean in ``x_t`` (a context that conditional scoring conditions on;
        their terms are not part of any bound and are the caller's to drop)."""
        B, L = x0.shape
        rows = x0.reshape(-1, self.block_size)  # (B * blocks, bs) one block per row
        row_t = t.reshape(-1)  # (B * blocks,)
        xt = self.kernel.corrupt(rows, row_t, generator)  # (B * blocks, bs)
        if keep is not None:
            xt = torch.where(keep.reshape(rows.shape), rows, xt)
        times = t.repeat_interleave(self.block_size, dim=1)  # (B, L) each token its block's time
        logits = model.forward_block_diffusion(xt.view(B, L), x0, times.float())  # (B, L, V)
        logits = logits.reshape(rows.shape[0], self.block_size, -1)  # (B * blocks, bs, V)
        if getattr(model, "predicts_posterior", False):  # the NELBO reads the leave-one-out law
            logits = loo_from_posterior(self.kernel, logits, xt, row_t)
        return self.kernel.nelbo_terms(logits, rows, xt, row_t).view(B, L)  # (B, L), float64 when t is

    def _block_terms(self, model, x0: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor:
        """Every token's term at its block's time ``t`` (B, blocks): masks keep BD3-LM's own code (:meth:`_terms`),
        other kernels use their NELBO integrand (:meth:`kernel_terms`)."""
        if self.kernel.masked_diffusion:
            return self._terms(model, x0, t, generator)
        return self.kernel_terms(model, x0, t, generator)

    def decoder_logits(self, model, z0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(B, L, V) logits of every block of ``z0`` at t = 0, each given the clean earlier blocks of ``x0``: what the
        kernel's t = 0 decoder term reads (the leave-one-out law for a model that predicts the posterior)."""
        if self.kernel.masked_diffusion:  # a time-agnostic model: no t
            return model.forward_block_diffusion(z0, x0)
        logits = model.forward_block_diffusion(z0, x0, torch.zeros(z0.shape, device=z0.device))
        if getattr(model, "predicts_posterior", False):
            logits = loo_from_posterior(self.kernel, logits, z0, 0.0)
        return logits

    def loss_terms(self, model, x0: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        """Per-token terms (B, L) at each block's time: for masks ``w(t_b) * -log p(x0^i | x_t, x0_<b)`` at masked
        positions, 0 elsewhere; for other kernels the kernel's NELBO integrand at every position."""
        B = x0.shape[0]
        blocks = self._blocks(x0)
        t = sample_times(B * blocks, self.t_min, self.antithetic, generator, x0.device)  # (B * blocks,)
        if self.antithetic:  # strata in a random order, so that a row's blocks do not share one stratum
            t = t[torch.randperm(B * blocks, generator=generator, device=x0.device)]
        return self._block_terms(model, x0, t.view(B, blocks), generator)

    def bound_terms(
        self,
        model,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        split: float = 1e-3,
        share: float = IMPORTANCE_SHARE,
    ):
        """One draw of the whole bound's parts (:mod:`tokendiff.objectives.bound`): every block's time from the
        importance density on (0, 1], and the t = 0 term (one call with every block at t = 0) when
        ``alpha(0) < 1``.

        The prior term is not here, as in :class:`~tokendiff.objectives.clean.CleanObjective`: evaluation adds
        ``kernel.prior_terms`` of every token (:func:`tokendiff.evaluation.likelihood.evaluate_likelihood`),
        which is the sum of the blocks' prior terms, since ``q_1`` and ``p(x_1)`` factorise over tokens."""
        B = x0.shape[0]
        blocks = self._blocks(x0)
        t, weight = importance_times(B * blocks, self.kernel.small_time_order, generator, x0.device, share)
        t, weight = t.view(B, blocks), weight.view(B, blocks)
        terms = self._block_terms(model, x0, t, generator) * weight.repeat_interleave(self.block_size, dim=1)
        below = (t < split).repeat_interleave(self.block_size, dim=1)  # (B, L)

        return BoundTerms(
            above=torch.where(below, torch.zeros_like(terms), terms),  # (B, L)
            below=torch.where(below, terms, torch.zeros_like(terms)),
            reconstruction=reconstruction_terms(
                self.kernel, lambda z0: self.decoder_logits(model, z0, x0), x0, generator
            ),
        )
