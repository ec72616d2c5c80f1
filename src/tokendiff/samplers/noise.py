"""The sampler's noise: one seeded generator per row, float64 draws, and the clean-token filters.

Every random draw is float64 (float32 Gumbel noise measurably lowers sample diversity, because its tail is
cut at ~-log(-log(1 - 2^-24)) ~ 16.6) and comes from one seeded generator per sample
(:func:`row_generators`), so that sample ``i`` of seed ``s`` is the same whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["row_generators", "row_uniform", "gumbel_argmax", "process_log_probs"]


def row_generators(seed: int, n: int, start: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample; sample ``i`` is seeded from ``(seed, start + i)`` only."""
    gens = []
    for i in range(start, start + n):
        state = int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0] >> 1)
        gens.append(torch.Generator().manual_seed(state))
    return gens


def row_uniform(generators: list[torch.Generator], shape: tuple, device) -> torch.Tensor:
    """Float64 uniforms in (0, 1), shape (B, *shape), row ``b`` drawn from ``generators[b]``."""
    u = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
    tiny = torch.finfo(torch.float64).tiny
    return u.clamp_(min=tiny, max=1.0 - 2**-53).to(device)


def gumbel_argmax(log_probs: torch.Tensor, generators) -> torch.Tensor:
    """Exact categorical draw ``argmax(log p + Gumbel)`` in float64. log_probs: (B, L, K) -> (B, L)."""
    u = row_uniform(generators, tuple(log_probs.shape[1:]), log_probs.device)  # (B, L, K)
    gumbel = -torch.log(-torch.log(u))  # (B, L, K)
    return torch.argmax(log_probs.double() + gumbel, dim=-1)


def process_log_probs(logits: torch.Tensor, temperature: float, top_p: float, top_k: int = 0) -> torch.Tensor:
    """Float64 log-probabilities after temperature, top-k and nucleus (top-p) filtering, (B, L, V).

    ``temperature == 0`` is greedy: a point mass on the most likely token. ``top_k`` keeps the ``k`` most
    likely tokens (and any tied with the k-th; 0 = off), then ``top_p`` the smallest nucleus of the rest.
    """
    logits = logits.double()
    if temperature == 0.0:
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    log_probs = torch.log_softmax(logits / temperature, dim=-1)  # (B, L, V)
    if 0 < top_k < log_probs.shape[-1]:
        kth = log_probs.topk(top_k, dim=-1).values[..., -1:]  # (B, L, 1)
        log_probs = torch.log_softmax(log_probs.masked_fill(log_probs < kth, float("-inf")), dim=-1)
    if top_p < 1.0:
        sorted_lp, order = log_probs.sort(dim=-1, descending=True)  # (B, L, V)
        mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of strictly better tokens
        drop_sorted = mass_before >= top_p  # always keeps the top token
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        log_probs = torch.log_softmax(log_probs.masked_fill(drop, float("-inf")), dim=-1)
    return log_probs
