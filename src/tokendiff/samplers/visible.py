"""Visible-subset averaging: a training-free check for models that only ever saw a share ``q`` of each
sequence (naive training on corrupted data).

Once more than ``limit * L`` tokens of a row are known, the model is shown a random subset of that many of
them, and its probabilities are averaged over ``subsets`` such subsets. The subsets come from streams of
their own, one per row, so the output stays independent of the batch size.
"""

from __future__ import annotations

from typing import Callable

import torch

from tokendiff.samplers.noise import row_uniform

__all__ = ["VisibleSubsets"]

SUBSET_STREAM = 0x5EED5  # offsets a row's seed for the subsets' generators


class VisibleSubsets:
    """Show ``model`` at most ``limit * L`` known tokens of each row, averaging over ``subsets`` draws."""

    def __init__(self, limit: float, subsets: int, mask_id: int):
        self.limit, self.subsets, self.mask_id = limit, subsets, mask_id
        self.generators: list[torch.Generator] = []

    def start(self, generators: list[torch.Generator]) -> None:
        """Seed one subset stream per row from the row's own generator (call before each batch)."""
        seeds = [(g.initial_seed() + SUBSET_STREAM) % 2**63 for g in generators]
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def needed(self, x: torch.Tensor) -> bool:
        """Whether some row of ``x`` (B, L) knows more tokens than the model may see."""
        return bool(((x != self.mask_id).sum(1) > self.cap(x)).any())

    def cap(self, x: torch.Tensor) -> int:
        return int(self.limit * x.shape[1])

    def log_probs(self, call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Log of the probabilities ``softmax(call(x'))`` averaged over the subsets ``x'`` of ``x``, (B, L, V)."""
        known = x != self.mask_id  # (B, L)
        cap = self.cap(x)
        probs = 0.0
        for _ in range(self.subsets):  # the model sees cap known tokens of each row, drawn uniformly
            scores = row_uniform(self.generators, (x.shape[1],), x.device).masked_fill(~known, 2.0)
            shown = scores.argsort(1).argsort(1) < cap  # (B, L)
            logits = call(torch.where(shown | ~known, x, self.mask_id))  # (B, L, V)
            probs = probs + torch.softmax(logits.double(), dim=-1) / self.subsets
        return torch.log(probs.clamp_min(1e-300))  # (B, L, V) log of the averaged probabilities
