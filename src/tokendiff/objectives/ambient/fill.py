"""The model's own draws during ambient training: reveal chosen masked tokens of a sequence with samples of
the model, the step the hard losses use to reach states no data gives them (anchors, imputations)."""

from __future__ import annotations

import torch

from tokendiff.processes.draws import categorical, random_ranks

__all__ = ["fill"]


@torch.no_grad()
def fill(model, z: torch.Tensor, positions: torch.Tensor, generator, rounds: int) -> torch.Tensor:
    """Reveal the masked tokens ``positions`` (B, L) of ``z`` (B, L) with the model's own draws, in a
    uniformly random order split into ``rounds`` rounds of one forward pass each (one token per round is the
    exact sequential draw; more per round draw them independently given ``z``). ``model(z, None) -> logits``."""
    n = positions.sum(1, keepdim=True)  # (B, 1)
    rank = random_ranks(torch.rand(z.shape, generator=generator, device=z.device), positions)  # (B, L)
    for k in range(rounds):
        reveal = positions & (rank >= n * k // rounds) & (rank < n * (k + 1) // rounds)
        if not reveal.any():
            continue
        log_p = torch.log_softmax(model(z, None).double(), dim=-1)  # (B, L, V)
        z = torch.where(reveal, categorical(log_p, generator), z)
    return z
