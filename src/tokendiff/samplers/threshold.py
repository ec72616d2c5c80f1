"""The threshold step (parallel decoding, as Fast-dLLM, Wu et al. 2025): the confidence step, and also
every masked token whose confidence exceeds ``threshold``, so confident stretches are written in one model
call. At least one mask is revealed per step, so the loop always advances (and ends once none is left).
"""

from __future__ import annotations

import math

import torch

from tokendiff.processes.base import Kernel
from tokendiff.samplers.confidence import ConfidenceStep
from tokendiff.samplers.settings import SamplingSettings

__all__ = ["ThresholdStep", "confidence_measure"]


def confidence_measure(kind: str, log_p_x0: torch.Tensor, log_p_candidate: torch.Tensor) -> torch.Tensor:
    """Confidence of each position, (B, L) in [0, 1]: ``prob`` (the probability of the sampled token),
    ``margin`` (top-1 minus top-2 probability) or ``entropy`` (1 - entropy / log V)."""
    if kind == "prob":
        return log_p_candidate.exp()
    p = log_p_x0.exp()  # (B, L, V)
    if kind == "margin":
        top2 = p.topk(2, dim=-1).values if p.shape[-1] > 1 else torch.cat([p, torch.zeros_like(p)], -1)
        return top2[..., 0] - top2[..., 1]
    plogp = torch.where(p > 0, p * log_p_x0, torch.zeros_like(p))
    return 1.0 + plogp.sum(-1) / math.log(max(p.shape[-1], 2))  # 1 - H / log V


class ThresholdStep(ConfidenceStep):
    """The confidence step, plus every mask whose ``confidence`` measure exceeds ``threshold``."""

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        super().__init__(kernel, settings)
        self.threshold = float(settings.threshold)
        self.confidence = settings.confidence

    def count(self, n_reveal: torch.Tensor) -> torch.Tensor:
        return n_reveal.clamp(min=1)  # at least one per step: the loop always advances

    def extend(self, reveal, masked, log_p_x0, log_p_candidate) -> torch.Tensor:
        return reveal | (masked & (confidence_measure(self.confidence, log_p_x0, log_p_candidate) > self.threshold))
