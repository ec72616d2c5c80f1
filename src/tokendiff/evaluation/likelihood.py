"""Likelihood of held-out text: NELBO (an upper bound on -log p) with a Monte Carlo standard error.

For a diffusion model the per-token NELBO of a sequence ``x`` of ``L`` tokens is

    nelbo(x) = (1/L) ( E_{z0} [-log p(x | z0)]
                     + int_0^1 E_{x_t} [ sum_i term_i(x_t, t) ] dt
                     + sum_i KL(q_1(. | x^i) || p(x_1)) )

(nats per token): the reconstruction term at t = 0 (0 unless the schedule starts at ``alpha(0) < 1``), the
kernel's NELBO integrand over *all* of [0, 1] (for masks ``w(t) * -log p_theta(x^i | x_t)`` at masked
positions; times from an importance density that keeps the estimator's variance finite down to t = 0,
:mod:`tokendiff.objectives.bound`), and the prior term, which is deterministic (``prior_nats_per_token``;
``eps * log V`` for masks). Nothing is left out, so it bounds ``-log p_theta(x)`` for every kernel and
schedule (``tests/test_bounds.py`` checks it by enumeration). The part of the integral at ``t < t_min``
(``eval.t_min``) is printed apart (``below_t_min_nats_per_token``), and so is the reconstruction term:
``truncated_nelbo_nats_per_token`` (the NELBO without either) is the number MDLM-style papers print, a
bound only for masks with ``alpha(0) = 1`` and then only up to ~t_min of a cross-entropy.

Each is estimated with ``D`` independent draws of ``(t, x_t)`` (and ``z0``) per sequence. Over ``N``
sequences we report the mean ``m`` and its Monte Carlo standard error ``sqrt(mean_n var_d(v_nd) / (N D))``:
the error due to the random draws for this fixed evaluation set (what changes if you re-run with another
seed). Then, as in nanochat's ``evaluate_bpb``:

    bits_per_token = m / ln 2;   perplexity = exp(m);   bits_per_char = m * tokens / chars / ln 2

(standard errors by the delta method). For a character tokenizer bits per token *is* bits per char.
The autoregressive baseline's terms are exact log-likelihoods, so its Monte Carlo error is 0.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tokendiff.data.chat import RESPONSE
from tokendiff.objectives import EVAL_T_MIN, CleanObjective, likelihood_objective
from tokendiff.objectives.times import IMPORTANCE_SHARE

__all__ = ["LikelihoodResult", "evaluate_likelihood"]


@dataclass
class LikelihoodResult:
    nelbo_nats_per_token: float
    nelbo_nats_per_token_stderr: float | None  # None with one draw per sequence (eval.num_draws=1)
    prior_nats_per_token: float  # the prior term inside the NELBO (0 for autoregressive)
    reconstruction_nats_per_token: float  # the t = 0 term inside the NELBO (0 when alpha(0) = 1)
    below_t_min_nats_per_token: float  # the part of the NELBO's integral at t < t_min (inside the NELBO)
    truncated_nelbo_nats_per_token: float  # the NELBO without those two: what t_min-truncated estimates print
    t_min: float  # where the integral is split for below_t_min_nats_per_token
    bits_per_token: float
    bits_per_token_stderr: float | None
    perplexity: float
    perplexity_stderr: float | None
    bits_per_char: float | None
    bits_per_char_stderr: float | None
    sequences: int
    tokens_per_sequence: int
    draws: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_likelihood(
    model,
    objective,
    windows: torch.Tensor,
    num_draws: int = 4,
    batch_size: int = 32,
    seed: int = 0,
    chars_per_token: float | None = None,
    device="cpu",
    autocast=contextlib.nullcontext,
    t_min: float = EVAL_T_MIN,
    shard: tuple[int, int] = (0, 1),
    gather=None,
    importance_share: float = IMPORTANCE_SHARE,
) -> LikelihoodResult:
    """The clean NELBO of ``model`` on ``windows`` (N, L [+1 for autoregressive]), for a model trained
    with ``objective`` (its kernel's estimator: :func:`~tokendiff.objectives.likelihood_objective`).

    Deterministic for a given seed, batch size and device; times are drawn independently for every
    sequence and draw.

    ``importance_share``: the share of times drawn from the power law packed toward t = 0
    (:func:`~tokendiff.objectives.times.importance_times`); it moves the standard error, not the bound.

    Several processes: ``shard=(rank, world)`` scores windows ``rank::world`` with draws seeded by
    ``(seed, rank)``, and ``gather`` (a list of per-process tensors -> all of them, e.g. accelerate's
    ``gather_object``) joins the per-sequence values, so every process returns the same result over
    all windows (deterministic for a given number of processes).
    """
    estimator = likelihood_objective(objective)
    roles = None  # chat examples (ids, roles): the bound of each response given its prompt, per response token
    if isinstance(windows, tuple):
        windows, roles = windows
    if roles is None and getattr(estimator, "takes_roles", False):  # a fine-tuned model on plain text: the whole
        estimator = CleanObjective(estimator.kernel, t_min=0.0, antithetic=False)  # sequence's NELBO
    rank, world = shard
    if world > 1:
        windows = windows[rank::world]
        roles = None if roles is None else roles[rank::world]
        seed = int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    exact = estimator.kernel is None  # autoregressive: no randomness
    draws = 1 if exact else num_draws
    per_seq = torch.zeros(windows.shape[0], draws, dtype=torch.float64)  # v_nd, nats per token
    parts = torch.zeros(windows.shape[0], 2, dtype=torch.float64)  # below t_min, reconstruction (draw means)
    prior = torch.zeros(windows.shape[0], dtype=torch.float64)  # nats per token, the same in every draw
    # chat examples: only each response's positions count, and the figures are per response token
    scored = None if roles is None else roles == RESPONSE  # (N, L)
    counts = None if scored is None else scored.sum(1).double()  # (N,)
    if not exact:
        prior_terms = torch.cat([estimator.kernel.prior_terms(w).double().cpu() for w in windows.split(batch_size)])
        prior = prior_terms.mean(1) if scored is None else (prior_terms * scored).sum(1) / counts  # (N,)
    for d in range(draws):
        for start in range(0, windows.shape[0], batch_size):
            x = windows[start : start + batch_size].to(device)  # (b, L)
            rows = slice(start, start + x.shape[0])
            kwargs = {} if roles is None else {"roles": roles[rows].to(device)}
            with autocast():
                if exact:
                    terms = estimator.loss_terms(model, x, generator, **kwargs).double()  # (b, L')
                else:
                    bound = estimator.bound_terms(model, x, generator, split=t_min, share=importance_share, **kwargs)
                    terms = bound.total()  # (b, L)
            n = terms.shape[1] if counts is None else counts[rows]  # tokens per row the figures are per
            if not exact:
                below, recon = bound.below.sum(1).cpu() / n, bound.reconstruction.sum(1).cpu() / n
                parts[rows] += torch.stack([below, recon], 1) / draws
            per_seq[rows, d] = terms.sum(dim=1).cpu() / n + prior[rows]
    tokens_per_sequence = windows.shape[1] - estimator.extra_tokens
    if counts is not None:  # the responses' mean length: what the per-token figures are per
        tokens_per_sequence = round(counts.mean().item())
    if world > 1:  # every process's rows (and their prior terms), in rank order
        joined = gather([(per_seq, prior, parts)])
        per_seq = torch.cat([p[0].cpu() for p in joined])
        prior = torch.cat([p[1].cpu() for p in joined])
        parts = torch.cat([p[2].cpu() for p in joined])
    n = per_seq.shape[0]
    mean = per_seq.mean().item()
    if draws > 1:
        stderr = math.sqrt(per_seq.var(dim=1, unbiased=True).mean().item() / (n * draws))
    else:
        stderr = 0.0 if exact else None  # one draw per sequence: no spread to estimate it from
    ln2 = math.log(2.0)
    scale = lambda v, f: None if v is None else v * f  # noqa: E731
    bpc = bpc_se = None
    if chars_per_token:
        bpc, bpc_se = mean / chars_per_token / ln2, scale(stderr, 1 / chars_per_token / ln2)
    return LikelihoodResult(
        nelbo_nats_per_token=mean,
        nelbo_nats_per_token_stderr=stderr,
        prior_nats_per_token=prior.mean().item(),
        reconstruction_nats_per_token=parts[:, 1].mean().item(),
        below_t_min_nats_per_token=parts[:, 0].mean().item(),
        truncated_nelbo_nats_per_token=mean - parts.sum(1).mean().item(),
        t_min=0.0 if exact else t_min,
        bits_per_token=mean / ln2,
        bits_per_token_stderr=scale(stderr, 1 / ln2),
        perplexity=math.exp(mean),
        perplexity_stderr=scale(stderr, math.exp(mean)),
        bits_per_char=bpc,
        bits_per_char_stderr=bpc_se,
        sequences=n,
        tokens_per_sequence=int(tokens_per_sequence),
        draws=draws,
    )
