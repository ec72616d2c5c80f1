"""Next-token prediction: the autoregressive yardstick for a diffusion LM of the same size.

Not a diffusion process, but it shares the interface the trainer and evaluator use
(``loss_terms``, ``extra_tokens``), so that the baseline runs through exactly the same code.
Its terms are exact per-token negative log-likelihoods, so no time or mask is drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AutoregressiveProcess"]


class AutoregressiveProcess:
    """``-log p(x_{i+1} | x_{<=i})`` for each position of a causal model."""

    name = "autoregressive"
    extra_tokens = 1  # a window of L + 1 tokens gives L predictions

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.mask_token_id = None

    def loss_terms(self, denoiser, x: torch.Tensor, generator: torch.Generator | None = None):
        """``x``: (B, L + 1) token ids. Returns (B, L) nats per predicted token."""
        logits = denoiser(x[:, :-1], None)  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none")  # (B, L)

    def to_dict(self) -> dict:
        return {"forward_process": self.name, "vocab_size": self.vocab_size, "mask_token_id": None}
