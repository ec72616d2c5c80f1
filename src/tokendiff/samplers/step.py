"""The step interface: one reverse step ``x_t -> x_s`` of the positions a loop writes.

A *step rule* is the math of one step, as a diffusers scheduler's ``step(model_output, timestep, sample)``;
the loop (:class:`tokendiff.samplers.diffusion.DiffusionSampler`) owns the model calls, the logits cache,
the blocks and the KV caches, and hands each rule the same :class:`StepInput`. A new rule is one file with
one class and one line in :mod:`tokendiff.samplers.rules`; the loop does not change.

A rule with ``sweeps > 0`` also corrects: after each step the loop calls the model again on ``x_s`` at time
``s`` and hands the rule's ``correct`` those logits, ``sweeps`` times (the leave-one-out corrector of
:mod:`tokendiff.samplers.loo_corrector`).
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
    index: int = 0  # this step's number in the loop: 0 .. steps - 1
    steps: int = 1  # the loop's steps (a block's, in block-wise sampling)
    logits: torch.Tensor | None = None  # (B, L, V) the model's raw logits, before temperature and filters
    temperature: float = 1.0  # this step's (0: greedy)

    def scoring_log_probs(self, log_p_x0: torch.Tensor) -> torch.Tensor:
        """The log-probabilities a rule ranks its confidence by, (B, L, V) float64: ``log_p_x0``, or at temperature
        0 (where every candidate has probability 1) those of the raw logits, as LLaDA's greedy decoding does."""
        return torch.log_softmax(self.logits.double(), dim=-1) if self.temperature == 0 else log_p_x0


class StepRule(Protocol):
    """``step(log_p_x0, state) -> x_s`` (B, L): the next ids from the model's clean-token log-probabilities
    ``log_p_x0`` (B, L, V) float64 (after temperature, top-k and top-p). Built as ``Rule(kernel, settings)``,
    where its constructor refuses a kernel or settings it cannot follow."""

    # whether a revealed token may change again (be masked again, or edited): the loop then runs every step
    # instead of stopping once nothing is masked
    remasks: bool
    sweeps: int  # corrector sweeps after each step (0: none; then ``correct`` is never called)

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor: ...

    def correct(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        """One corrector sweep: ``x`` (B, L) at time ``state.s`` from the model's log-probabilities of ``state.x``
        at that time (only for ``sweeps > 0``)."""
