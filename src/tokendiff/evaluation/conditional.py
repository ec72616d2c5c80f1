"""The likelihood of a continuation given a clean context, ``-log p(continuation | context)``: what a
harness asks of a language model (lm-evaluation-harness's ``loglikelihood`` and ``loglikelihood_rolling``).

- **Autoregressive** models give it exactly: the sum of the next-token log-probabilities of the continuation.
  With no context at all the first token is scored as ``log(1/V)``: the model's own generative process
  draws its first token uniformly (:func:`tokendiff.samplers.text.generate`), so that is its probability.
- **Diffusion** models give the conditional NELBO, an upper bound on ``-log p_theta(continuation | context)``
  for the reverse process that keeps the context clean (as every sampler does with a prompt): the forward
  process corrupts the continuation's positions only and only they are scored. It is estimated with ``D``
  draws and reported with its Monte Carlo standard error.

  * Masks (``kernel.masked_diffusion``): the count estimator, as LLaDA's ``get_log_likelihood`` does. For a
    continuation of ``n`` tokens draw a count ``l`` uniform on ``1..n``, mask a uniformly drawn set of exactly
    ``l`` of its positions and weight each masked cross-entropy by ``n / l``: an unbiased estimate of
    ``sum_l (1/l) E_{|S|=l} sum_{i in S} -log p(x_i | x_{-S}, context)``, which is the masked NELBO whatever
    the schedule (:class:`~tokendiff.objectives.clean.CleanObjective`'s ``count`` estimator). The counts of the
    ``D`` draws are stratified (``l_d = 1 + floor(n frac(u + d/D))``: uniform for each draw, evenly spread
    over the draws), which lowers the variance; the standard error, computed as if the draws were
    independent, then errs on the large side. Block diffusion scores every block of the continuation in
    one call, each with its own count, given the clean earlier blocks: exact across blocks, a bound inside
    them. A window that is not a whole number of blocks is padded on the right with masks that are never
    revealed (the bound is then on the marginal of the tokens given).
  * Other kernels (uniform, hybrid): the whole bound of :mod:`tokendiff.objectives.bound` restricted to the
    continuation: importance-weighted times on (0, 1], ``x_t ~ q_t`` on the continuation, the kernel's
    NELBO terms there, the prior term and, when ``alpha(0) < 1``, the reconstruction term. Block diffusion
    with uniform noise (ours, DiffusionGemma) does this block by block: every block its own time, given the
    clean earlier blocks, all blocks in one call (:func:`_block_totals`).

Draws depend only on ``(seed, tokens, scored_from)`` (:func:`request_seed`), never on the batch size, the
order of requests or the process that scores them.

A continuation longer than the model's window is scored in consecutive pieces of one window each, every
piece given the tokens before it that fit (:func:`windows`): the same disjoint windows as ``tokendiff
eval``; the context is left-truncated to the window.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokendiff.objectives.bound import starts_clean
from tokendiff.objectives.times import importance_times
from tokendiff.processes.absorbing import scored_nll

__all__ = ["ContinuationScore", "request_seed", "windows", "score_continuation", "score_tokens"]


@dataclass
class ContinuationScore:
    """``-log p(continuation | context)`` in nats: exact (autoregressive) or the conditional NELBO's estimate."""

    nats: float
    stderr: float  # Monte Carlo standard error of ``nats`` (0 when exact; nan with one draw)
    tokens: int  # continuation tokens scored
    draws: int  # 1 when exact


def request_seed(seed: int, tokens: list[int], scored_from: int) -> int:
    """The seed of one request's draws: a hash of the run's ``seed`` and the request itself."""
    digest = hashlib.sha256(json.dumps([seed, scored_from, tokens]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def windows(tokens: list[int], scored_from: int, window: int) -> list[tuple[list[int], int]]:
    """Split the scoring of ``tokens[scored_from:]`` given ``tokens[:scored_from]`` into ``(window tokens,
    scored_from)`` pieces of at most ``window`` tokens: pieces of ``window`` scored tokens from the start,
    each given the tokens before it that fit in its window (none for a full piece)."""
    pieces, start = [], scored_from
    while start < len(tokens):
        stop = min(start + window, len(tokens))
        first = max(0, stop - window)  # the tokens before the piece that fit in its window
        pieces.append((tokens[first:stop], start - first))
        start = stop
    return pieces


def _exact(model, x: torch.Tensor, scored_from: int) -> torch.Tensor:
    """``-log p`` of ``x[scored_from:]`` under a causal model, (1,) float64 nats; x is (L,)."""
    total = torch.zeros(1, dtype=torch.float64)
    if scored_from == 0:  # the first token, drawn uniformly by the model's sampler
        total += math.log(model.vocab_size)
        scored_from = 1
    if scored_from < x.shape[0]:
        logits = model(x[None, :-1], None).double()  # (1, L - 1, V): position i predicts token i + 1
        logp = F.log_softmax(logits[0, scored_from - 1 :], dim=-1)  # (n, V)
        total -= logp.gather(1, x[scored_from:, None]).sum().cpu()
    return total


def _count_rows(kernel, model, x0: torch.Tensor, scored: torch.Tensor, draws: int, g: torch.Generator):
    """The count estimator's ``draws`` rows: masked inputs (D, L) and weights (D, L) (``n_b / l`` at masked
    positions, 0 elsewhere), one count per block of the continuation (one block: a bidirectional model)."""
    L = x0.shape[0]
    block = model.block_diffusion or L
    xt = x0.repeat(draws, 1)  # (D, L)
    weight = torch.zeros(draws, L, dtype=torch.float64)
    for a in range(0, L, block):
        positions = scored[a : a + block].nonzero().flatten() + a  # (n_b,)
        n = positions.numel()
        if n == 0:
            continue
        u = torch.rand(1, generator=g, dtype=torch.float64)
        for d in range(draws):
            count = 1 + min(n - 1, int(n * ((u.item() + d / draws) % 1.0)))  # stratified, uniform on 1..n
            chosen = positions[torch.randperm(n, generator=g)[:count]]
            xt[d, chosen] = kernel.mask_token_id
            weight[d, chosen] = n / count
    return xt, weight


@torch.no_grad()
def score_tokens(
    model, kernel, tokens: list[int], scored_from: int, *, draws: int, seed: int, batch_size: int = 32, device="cpu"
) -> ContinuationScore:
    """``-log p(tokens[scored_from:] | tokens[:scored_from])`` for one window (at most the model's context)."""
    n = len(tokens) - scored_from
    x0 = torch.tensor(tokens, dtype=torch.long)  # (L,)
    if kernel is None:
        return ContinuationScore(float(_exact(model, x0.to(device), scored_from)), 0.0, n, 1)
    block = model.block_diffusion
    g = torch.Generator().manual_seed(request_seed(seed, tokens, scored_from))
    if block and not kernel.masked_diffusion:
        return _summary(_block_totals(model, kernel, x0, scored_from, draws, g, batch_size, device), n)
    if block and len(tokens) % block:  # masks that are never revealed fill the last block
        x0 = torch.cat([x0, torch.full((block - len(tokens) % block,), kernel.mask_token_id)])
    scored = torch.zeros(x0.shape, dtype=torch.bool)
    scored[scored_from : len(tokens)] = True
    totals = torch.zeros(draws, dtype=torch.float64)  # nats over the continuation, per draw
    if kernel.masked_diffusion:
        xt, weight = _count_rows(kernel, model, x0, scored, draws, g)
        xt[:, len(tokens) :] = kernel.mask_token_id
        for a in range(0, draws, batch_size):
            rows = xt[a : a + batch_size].to(device)  # (b, L)
            clean = x0.to(device).expand_as(rows)
            if block:
                logits = model.forward_block_diffusion(rows, clean)
            else:
                t = (rows == kernel.mask_token_id).float().mean(1)  # (b,) the masked share, as in training
                logits = model(rows, t)
            w = weight[a : a + batch_size].to(device)
            totals[a : a + batch_size] = scored_nll(logits, clean, w > 0, w).double().sum(1).cpu()
        return _summary(totals, n)
    t, w = importance_times(draws, kernel.small_time_order, g)  # (D,) float64 times and their weights
    prior = float(kernel.prior_terms(x0[None])[0][scored].double().sum())
    keep = ~scored
    for a in range(0, draws, batch_size):
        tb, wb = t[a : a + batch_size], w[a : a + batch_size]
        x = x0.repeat(tb.shape[0], 1)  # (b, L)
        xt = torch.where(keep, x, kernel.corrupt(x, tb, g)).to(device)  # the context stays clean
        x, tb_d = x.to(device), tb.to(device)
        terms = kernel.nelbo_terms(model(xt, tb_d.float()), x, xt, tb_d).double().cpu() * wb[:, None]  # (b, L)
        totals[a : a + tb.shape[0]] = terms[:, scored].sum(1) + prior
        if not starts_clean(kernel):  # the t = 0 term
            zero = torch.zeros(tb.shape[0], dtype=torch.float64)
            z0 = torch.where(keep, x.cpu(), kernel.corrupt(x.cpu(), zero, g)).to(device)
            recon = kernel.reconstruction_terms(model(z0, zero.float().to(device)), x, z0).double().cpu()
            totals[a : a + tb.shape[0]] += recon[:, scored].sum(1)
    return _summary(totals, n)


def _block_totals(model, kernel, x0, scored_from: int, draws: int, g, batch_size: int, device) -> torch.Tensor:
    """(D,) nats over the continuation ``x0[scored_from:]`` of a block model without masks (uniform noise: ours,
    DiffusionGemma): every block its own importance-weighted time, ``x_t ~ q_t`` on the continuation's positions
    (the context stays clean, in its own blocks and inside a shared one), the kernel's terms there given the clean
    earlier blocks (:meth:`~tokendiff.objectives.BlockDiffusionObjective.kernel_terms`), plus the prior term.

    A window that is not a whole number of blocks is filled on the right with uniformly drawn tokens, drawn
    again in every draw and never scored: for each filling the bound is that of a model of the continuation,
    so its average bounds the mixture over fillings (Jensen)."""
    from tokendiff.objectives.block import BlockDiffusionObjective

    block = model.block_diffusion
    objective = BlockDiffusionObjective(kernel, block)
    n_tokens = x0.shape[0]
    L = -(-n_tokens // block) * block
    keep = torch.zeros(L, dtype=torch.bool)
    keep[:scored_from] = True  # the clean context
    scored = torch.zeros(L, dtype=torch.bool)
    scored[scored_from:n_tokens] = True
    prior = float(kernel.prior_terms(x0[None])[0][scored[:n_tokens]].double().sum())
    blocks = L // block
    totals = torch.zeros(draws, dtype=torch.float64)
    # the model's device draws x_t (kernel_terms corrupts there), seeded from the request's generator
    on_device = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
    for a in range(0, draws, batch_size):
        b = min(batch_size, draws - a)
        t, w = importance_times(b * blocks, kernel.small_time_order, g)  # float64 times and weights, per block
        t, w = t.view(b, blocks), w.view(b, blocks).repeat_interleave(block, dim=1)  # (b, blocks), (b, L)
        filling = torch.randint(0, kernel.vocab_size, (b, L - n_tokens), generator=g)
        x = torch.cat([x0.expand(b, -1), filling], dim=1)  # (b, L)
        terms = objective.kernel_terms(model, x.to(device), t.to(device), on_device, keep.to(device).expand(b, -1))
        totals[a : a + b] = (terms.double().cpu() * w)[:, scored].sum(1) + prior
        if not starts_clean(kernel):  # the t = 0 term, every block at t = 0 given the clean earlier ones
            z0 = torch.where(keep, x, kernel.corrupt(x, torch.zeros(b, dtype=torch.float64), g)).to(device)
            logits = objective.decoder_logits(model, z0, x.to(device))
            recon = kernel.reconstruction_terms(logits, x.to(device), z0).double().cpu()
            totals[a : a + b] += recon[:, scored].sum(1)
    return totals


def _summary(totals: torch.Tensor, n: int) -> ContinuationScore:
    D = totals.shape[0]
    stderr = float(totals.std(unbiased=True) / math.sqrt(D)) if D > 1 else float("nan")
    return ContinuationScore(float(totals.mean()), stderr, n, D)


def score_continuation(
    model,
    kernel,
    context: list[int],
    continuation: list[int],
    *,
    window: int,
    draws: int,
    seed: int,
    batch_size: int = 32,
    device="cpu",
) -> ContinuationScore:
    """``-log p(continuation | context)`` over windows of ``window`` tokens (:func:`windows`): the pieces' nats
    add up, and so do their variances."""
    tokens = context + continuation
    parts = [
        score_tokens(model, kernel, piece, start, draws=draws, seed=seed, batch_size=batch_size, device=device)
        for piece, start in windows(tokens, len(context), window)
    ]
    nats = sum(p.nats for p in parts)
    stderr = math.sqrt(sum(p.stderr**2 for p in parts))
    return ContinuationScore(nats, stderr, len(continuation), parts[0].draws if parts else draws)
