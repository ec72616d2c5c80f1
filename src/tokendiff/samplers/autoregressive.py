"""Left-to-right sampling for the causal baseline, with the same noise rules as the diffusion samplers."""

from __future__ import annotations

import torch

from tokendiff.samplers.noise import gumbel_argmax, process_log_probs

__all__ = ["AutoregressiveSampler"]


class AutoregressiveSampler:
    """Extend each row of ``prefix`` (B, P) to ``length`` tokens, one model call per new token."""

    def __init__(self, model, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
        self.model = model
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.model_calls = 0

    @torch.no_grad()
    def sample(self, prefix: torch.Tensor, length: int, generators, callback=None) -> torch.Tensor:
        x = prefix
        while x.shape[1] < length:
            window = x[:, -self.model.block_size :]  # (B, <=block)
            self.model_calls += 1
            logits = self.model(window, None)[:, -1:, :]  # (B, 1, V)
            log_p = process_log_probs(logits, self.temperature, self.top_p, self.top_k)  # (B, 1, V)
            x = torch.cat([x, gumbel_argmax(log_p, generators)], dim=1)  # (B, L+1)
            if callback is not None:
                callback(x.shape[1], x)
        return x
