"""The step interface: one reverse step ``x_t -> x_s`` of the positions a loop writes.

A *step rule* is the math of one step, as a diffusers scheduler's ``step(model_output, timestep, sample)``;
the loop (:class:`tokendiff.samplers.diffusion.DiffusionSampler`) owns the model calls, the logits cache,
the blocks and the KV caches, and hands each rule the same :class:`StepInput`. A new rule is one file with
one class and one line in :mod:`tokendiff.samplers.rules`; the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["StepInput", "StepRule"]


@dataclass
class StepInput:
    """Everything a rule may read about the step from ``t`` to ``s < t``.

    The alphas are 0-dim float64 tensors (the rules' arithmetic on them is part of the sampler's output).
    """

    x: torch.Tensor  # (B, L) ids: x_t
    x_start: torch.Tensor  # (B, L) ids the loop started from: the held positions keep these
    free: torch.Tensor  # (B, L) bool: the positions this loop writes; the others never change
    t: float
    s: float
    alpha_t: torch.Tensor  # alpha(t)
    alpha_s: torch.Tensor  # alpha(s); 1 at the last step, which reveals every remaining mask
    alpha_start: torch.Tensor  # alpha at the loop's first time
    masked0: torch.Tensor  # (B,) masks among the free positions when the loop started
    generators: list[torch.Generator]  # one per row (tokendiff.samplers.noise.row_generators)


class StepRule(Protocol):
    """``step(log_p_x0, state) -> x_s`` (B, L): the next ids from the model's clean-token log-probabilities
    ``log_p_x0`` (B, L, V) float64 (after temperature, top-k and top-p). Built as ``Rule(kernel, settings)``,
    where its constructor refuses a kernel or settings it cannot follow."""

    # whether a revealed token may be masked again: the loop then runs every step instead of stopping once
    # nothing is masked
    remasks: bool

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor: ...
