"""Supervised fine-tuning: the NELBO of a response given its prompt (LLaDA's SFT, Nie et al. 2025, sec. 2.3).

A batch is ``x0`` (B, L) with the roles of :mod:`tokendiff.data.chat` (B, L): the prompt is never noised and
never scored, the response is noised and scored, and ``PAD`` positions (``data.chat_padding=mask``) are held
masked at every time and never scored. So with ``x_t`` drawn on the response only,

    NELBO(r | p) = E_t E_{x_t ~ q_t(. | r)} [ sum_{i in r} term_i(x_t, p) ]   (+ the prior terms of r)

which bounds ``-log p_theta(response | prompt)`` (``tests/test_sft.py``: with the exact conditionals of a
known joint it equals it, by enumeration), and the gradient never reaches a prompt position's logits. Held
masks are an absorbing state the forward process never leaves, so for masks the bound is on the response's
marginal with the tail left out (as :mod:`tokendiff.evaluation.conditional` pads a window).

Estimators: ``time`` (a time per row, the kernel's own terms; every kernel) and ``count`` (masks: exactly
``k ~ U{1..n}`` of the row's ``n`` response tokens masked, each weighted ``n / k``:
:class:`~tokendiff.objectives.clean.CleanObjective`'s count estimator on the response alone). Evaluation
(:meth:`bound_terms`) leaves nothing out: importance times on (0, 1] and the t = 0 term.
"""

from __future__ import annotations

import torch

from tokendiff.data.chat import PAD, PROMPT, RESPONSE
from tokendiff.errors import TokenDiffError
from tokendiff.objectives.base import Objective
from tokendiff.objectives.bound import BoundTerms, starts_clean
from tokendiff.objectives.rules import check_count_kernel, check_t_min
from tokendiff.objectives.times import IMPORTANCE_SHARE, importance_times, sample_counts, sample_times
from tokendiff.processes.absorbing import scored_nll
from tokendiff.processes.base import Kernel
from tokendiff.processes.draws import random_subset

__all__ = ["ResponseObjective", "check_roles"]


def check_roles(roles) -> None:
    if roles is None:
        raise TokenDiffError(
            "fine-tuning on responses needs chat data (data.format=chat); this batch has no prompt/response roles"
        )


class ResponseObjective(Objective):
    """The response NELBO given a clean prompt; ``loss_terms(model, x0, generator, progress, roles=...)``.

    Args:
        kernel: the forward process (``data.chat_padding=mask`` needs one with a mask).
        t_min, antithetic: as :class:`~tokendiff.objectives.clean.CleanObjective`'s.
        estimator: ``time`` or ``count`` (masks only).
    """

    name = "response"
    extra_tokens = 0
    takes_roles = True  # the trainer and evaluation pass the batch's roles

    def __init__(self, kernel: Kernel, t_min: float = 1e-3, antithetic: bool = True, estimator: str = "time"):
        check_t_min(t_min)
        if estimator not in ("time", "count"):
            raise TokenDiffError(
                f"diffusion.estimator={estimator!r} does not apply to fine-tuning on responses; use time or count"
            )
        if estimator == "count":
            check_count_kernel(kernel.masked_diffusion, kernel.name)
        self.kernel = kernel
        self.t_min = t_min
        self.antithetic = antithetic
        self.estimator = estimator

    def _noised(self, x0, xt, roles):
        """``x_t`` with the prompt restored and the held positions masked."""
        xt = torch.where(roles == PROMPT, x0, xt)
        if self.kernel.name == "uniform":  # no mask to hold (asked only here: it reads the roles back from a GPU)
            if (roles == PAD).any():
                raise TokenDiffError(
                    "data.chat_padding=mask holds padding masked, but uniform noise has no mask; "
                    "use data.chat_padding=eos"
                )
            return xt
        return torch.where(roles == PAD, torch.full_like(xt, self.kernel.mask_token_id), xt)

    def loss_terms(self, model, x0, generator=None, progress: float = 1.0, roles=None):
        """Per-token terms (B, L): the kernel's NELBO terms at response positions, 0 elsewhere."""
        check_roles(roles)
        response = roles == RESPONSE  # (B, L)
        if self.estimator == "count":
            return self._count_terms(model, x0, roles, response, generator)
        t = sample_times(x0.shape[0], self.t_min, self.antithetic, generator, x0.device)  # (B,)
        xt = self._noised(x0, self.kernel.corrupt(x0, t, generator), roles)  # (B, L)
        terms = self.kernel.nelbo_terms(model(xt, t), x0, xt, t)  # (B, L)
        return torch.where(response, terms, torch.zeros_like(terms))

    def _count_terms(self, model, x0, roles, response, generator):
        B, L = x0.shape
        n = response.sum(1)  # (B,) response tokens per row
        k = sample_counts(n, self.antithetic, generator, x0.device)  # (B,) uniform over 1..n
        scores = torch.rand(B, L, generator=generator, device=x0.device)  # (B, L)
        masked = random_subset(scores, response, k[:, None])  # exactly k of the response's positions
        xt = torch.where(masked, torch.full_like(x0, self.kernel.mask_token_id), x0)
        xt = self._noised(x0, xt, roles)
        t = (xt == self.kernel.mask_token_id).float().mean(1)  # (B,) the masked share; a time-agnostic model ignores it
        return scored_nll(model(xt, t), x0, masked, (n.float() / k.float())[:, None])

    def bound_terms(self, model, x0, generator=None, split: float = 1e-3, share: float = IMPORTANCE_SHARE, roles=None):
        """One draw of the whole bound's parts on the response (:class:`~tokendiff.objectives.bound.BoundTerms`)."""
        check_roles(roles)
        response = roles == RESPONSE
        t, weight = importance_times(x0.shape[0], self.kernel.small_time_order, generator, x0.device, share)  # (B,)
        xt = self._noised(x0, self.kernel.corrupt(x0, t, generator), roles)
        terms = self.kernel.nelbo_terms(model(xt, t.float()), x0, xt, t).double() * weight[:, None]  # (B, L)
        terms = torch.where(response, terms, torch.zeros_like(terms))
        below = (t < split)[:, None]  # (B, 1)
        recon = torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
        if not starts_clean(self.kernel):  # the t = 0 term, on the response
            zero = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
            z0 = self._noised(x0, self.kernel.corrupt(x0, zero, generator), roles)
            recon = self.kernel.reconstruction_terms(model(z0, zero.float()), x0, z0).double()
            recon = torch.where(response, recon, torch.zeros_like(recon))
        return BoundTerms(
            above=torch.where(below, torch.zeros_like(terms), terms),
            below=torch.where(below, terms, torch.zeros_like(terms)),
            reconstruction=recon,
        )
