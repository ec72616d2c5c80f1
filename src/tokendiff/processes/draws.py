"""Random draws over tokens and positions, shared by the objectives (training-time draws of the model's own
samples) and the samplers: a categorical draw by the Gumbel-max trick, and a uniformly random subset of a
row's positions.

Each takes its uniforms from the caller, who owns the stream: training draws them from one generator for the
whole batch, the samplers from one generator per sample (so that a sample does not depend on the batch size).
Categorical draws are float64: float32 Gumbel noise is cut at ~16.6 and lowers sample diversity.
"""

from __future__ import annotations

import torch

__all__ = ["open_unit", "gumbel_max", "categorical", "random_ranks", "random_subset"]


def open_unit(u: torch.Tensor) -> torch.Tensor:
    """Float64 uniforms moved into the open interval (0, 1), where ``log(-log u)`` is finite."""
    return u.clamp(min=torch.finfo(torch.float64).tiny, max=1.0 - 2**-53)


def gumbel_max(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exact categorical draw ``argmax(log p + Gumbel)``: (B, L, K) log-probabilities and float64 uniforms in
    (0, 1) of the same shape -> (B, L) ids."""
    return torch.argmax(log_probs.double() - torch.log(-torch.log(u)), dim=-1)


def categorical(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from ``log_probs`` (B, L, K) with one generator for the whole batch -> (B, L) ids."""
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=torch.float64)
    return gumbel_max(log_probs, open_unit(u))


def random_ranks(u: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's positions in a uniformly random order, as ranks (B, L): the ``n`` allowed positions (all when
    ``allowed`` is None) get ranks ``0 .. n - 1`` in that order, the others come after. ``u``: uniforms in
    [0, 1) of shape (B, L), one per position (a uniform permutation is the order of i.i.d. uniforms)."""
    scores = u if allowed is None else u.masked_fill(~allowed, 2.0)  # (B, L): the others sort last
    return scores.argsort(1).argsort(1)


def random_subset(u: torch.Tensor, allowed: torch.Tensor | None, k) -> torch.Tensor:
    """A uniformly drawn set of ``min(k, n)`` of each row's ``n`` allowed positions, (B, L) bool. ``k``: an
    int or a (B, 1) tensor of counts per row; ``u`` and ``allowed`` as in :func:`random_ranks`."""
    chosen = random_ranks(u, allowed) < k  # (B, L)
    return chosen if allowed is None else allowed & chosen
