"""Next-token prediction: the autoregressive yardstick for a diffusion LM of the same size.

Not a diffusion objective (it has no kernel), but it has the interface the trainer and evaluator use,
so that the baseline runs through exactly the same code. Its terms are exact per-token negative
log-likelihoods, so no time or mask is drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokendiff.objectives.base import Objective

__all__ = ["AutoregressiveObjective"]


class AutoregressiveObjective(Objective):
    """``-log p(x_{i+1} | x_{<=i})`` for each position of a causal model."""

    name = "autoregressive"
    kernel = None
    t_min = 0.0
    extra_tokens = 1  # a window of L + 1 tokens gives L predictions

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def loss_terms(self, model, x: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        """``x``: (B, L + 1) token ids. Returns (B, L) nats per predicted token."""
        logits = model(x[:, :-1], None)  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none")  # (B, L)
