"""The confidence step: reveal the masked tokens whose sampled value is most probable.

The number revealed follows the schedule: after the step to ``s``, ``round(M0 (1 - a_s) / (1 - a_start))``
of the ``M0`` masks the loop started with stay masked, so none remain after the last step (``a_s = 1``).
Only for kernels whose reveals are final (masking): a revealed token is never changed again.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.noise import gumbel_argmax
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["ConfidenceStep"]


class ConfidenceStep:
    """Reveal the most confident masked tokens so that ``round(M0 (1-a_s)/(1-a_start))`` stay masked."""

    remasks = False
    sweeps = 0

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        if not kernel.reveals_are_final:
            raise TokenDiffError(
                f"sampling.strategy={settings.strategy} reveals masks for good, which "
                f"diffusion.process={kernel.name} does not do; use sampling.strategy=ancestral"
            )
        self.mask_id = kernel.mask_token_id

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        masked = (state.x == self.mask_id) & state.free  # (B, L)
        candidates = gumbel_argmax(log_p_x0, state.generators)  # (B, L) a sampled value per position
        scored = state.scoring_log_probs(log_p_x0)  # greedy: ranked by the raw logits' probabilities
        confidence = scored.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)  # (B, L)
        confidence = confidence.masked_fill(~masked, float("-inf"))
        keep_masked = torch.round(state.masked0 * (1.0 - state.alpha_s) / (1.0 - state.alpha_start)).long()  # (B,)
        n_reveal = self.count((masked.sum(-1) - keep_masked).clamp(min=0))  # (B,)
        rank = confidence.argsort(dim=-1, descending=True).argsort(dim=-1)  # (B, L) 0 = most confident
        reveal = masked & (rank < n_reveal[:, None])  # (B, L)
        return torch.where(self.extend(reveal, masked, scored, confidence), candidates, state.x)

    def count(self, n_reveal: torch.Tensor) -> torch.Tensor:
        """How many masks of each row (B,) the schedule reveals this step (a subclass may raise it)."""
        return n_reveal

    def extend(self, reveal, masked, log_p_x0, log_p_candidate) -> torch.Tensor:
        """The positions (B, L) revealed: the schedule's ``reveal`` (a subclass may add more)."""
        return reveal
