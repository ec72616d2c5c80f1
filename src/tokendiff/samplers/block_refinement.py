"""Block refinement: commit by confidence, and edit committed tokens (diffusers' ``BlockRefinementScheduler``;
LLaDA2's sampler, with LLaDA2.1's token editing).

Each step draws a candidate at every position (the model's sample, or its argmax at temperature 0) with its
*confidence*, the probability the candidate had (at temperature 0: under the raw logits' softmax). Then:

- **masks** (masked kernels): the ``n`` masks of a block are spread evenly over its steps (the first
  ``n mod steps`` steps take one more); a step commits every mask whose confidence exceeds ``threshold`` if
  there are at least its quota of them, else its quota of the most confident ones (at least ``minimal_topk``;
  the last step commits all that are left).
- **uniform** (uniform kernels: no masks): the committed positions are tracked from the block's first step;
  step ``i`` of ``N`` commits the most confident uncommitted positions until ``ceil((i + 1) n / N)`` are
  committed, and every uncommitted one above ``threshold``; the uncommitted ones are then redrawn uniformly.
- **editing** (``editing_threshold``): a committed token is replaced by its candidate when they differ and the
  candidate's confidence exceeds ``editing_threshold`` (in mask mode only a threshold > 0 edits, as diffusers),
  so an early mistake can be undone; positions the loop holds (a prompt) are never edited.

The functions :func:`refine_masks` and :func:`refine_uniform` are the step given its draws (the candidates,
their confidence, the noise), the one place of the math; :class:`BlockRefinementStep` draws them with the
loop's per-row generators.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.noise import gumbel_argmax
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["BlockRefinementStep", "refine_masks", "refine_uniform", "transfer_quota"]


def transfer_quota(n: torch.Tensor, steps: int, index: int) -> torch.Tensor:
    """Masks committed at step ``index`` of ``steps`` when ``n`` (B,) are spread evenly, (B,): ``n // steps``,
    plus one on the first ``n % steps`` steps."""
    return n // steps + (index < n % steps).long()


def _top(confidence: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k`` (B,) most confident ``allowed`` positions of each row, (B, L) bool."""
    score = confidence.masked_fill(~allowed, float("-inf"))
    rank = score.argsort(dim=-1, descending=True).argsort(dim=-1)  # (B, L) 0 = most confident
    return allowed & (rank < k[:, None])


def refine_masks(
    x: torch.Tensor,
    candidates: torch.Tensor,
    confidence: torch.Tensor,
    masked: torch.Tensor,
    editable: torch.Tensor,
    quota: torch.Tensor,
    threshold: float,
    editing_threshold: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask mode: ``(x_s, committed, edited)``, each (B, L). ``masked``: the masks to fill; ``editable``: the
    committed tokens that may be edited; ``quota`` (B,): the masks this step commits at least."""
    confident = masked & (confidence > threshold)
    enough = confident.sum(-1) >= quota  # (B,) the confident ones fill the quota: commit exactly them
    commit = torch.where(enough[:, None], confident, _top(confidence, masked, quota))
    edit = torch.zeros_like(commit)
    if editing_threshold is not None and editing_threshold > 0.0:
        edit = editable & (confidence > editing_threshold) & (candidates != x)
    return torch.where(commit | edit, candidates, x), commit, edit


def refine_uniform(
    x: torch.Tensor,
    candidates: torch.Tensor,
    confidence: torch.Tensor,
    committed: torch.Tensor,
    target: torch.Tensor,
    threshold: float,
    editing_threshold: float | None,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform mode: ``(x_s, committed after the step, newly committed, edited)``, each (B, L). ``committed``:
    the positions committed before (held ones included); ``target`` (B,): how many are committed after this
    step at least; ``noise``: the uniform draws of the positions still uncommitted."""
    needed = (target - committed.sum(-1)).clamp(min=0)  # (B,)
    free = ~committed
    commit = free & (_top(confidence, free, needed) | (confidence > threshold))
    edit = torch.zeros_like(commit)
    if editing_threshold is not None:
        edit = committed & (candidates != x) & (confidence > editing_threshold)
    x_s = torch.where(commit | edit, candidates, x)
    now = committed | commit
    return torch.where(now, x_s, noise), now, commit, edit


class BlockRefinementStep:
    """``sampling.strategy=block_refinement``: commit by confidence, edit above ``editing_threshold``."""

    sweeps = 0

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        self.uniform = kernel.name == "uniform"
        if not (kernel.reveals_are_final or self.uniform):
            raise TokenDiffError(
                f"sampling.strategy=block_refinement commits masks or tracks committed tokens in uniform noise; "
                f"diffusion.process={kernel.name} mixes both; use sampling.strategy=ancestral or ddim"
            )
        self.kernel = kernel
        self.mask_id = kernel.mask_token_id
        self.threshold = float(settings.threshold)
        self.editing_threshold = settings.editing_threshold
        self.minimal_topk = int(settings.minimal_topk)
        # an edited token may change again, so the loop runs every step (it cannot stop once nothing is masked)
        self.remasks = settings.editing_threshold is not None
        self.committed: torch.Tensor | None = None  # uniform mode: the block's committed positions (B, L)

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        candidates = gumbel_argmax(log_p_x0, state.generators)  # (B, L)
        scored = state.scoring_log_probs(log_p_x0)  # greedy: the raw logits' probabilities (all candidates have 1)
        confidence = scored.gather(-1, candidates.unsqueeze(-1)).squeeze(-1).exp()  # (B, L)
        if self.uniform:
            noise = gumbel_argmax(self.kernel.prior_log_probs().expand(*state.x.shape, -1), state.generators)
            return self.update_uniform(state, candidates, confidence, noise)
        x = state.x
        masked = (x == self.mask_id) & state.free
        if state.alpha_s >= 1.0:  # the last step: every mask left is committed (the loop ends here)
            quota = masked.sum(-1)
        else:
            quota = transfer_quota(state.masked0, state.steps, state.index).clamp(min=self.minimal_topk)
            quota = torch.minimum(quota, masked.sum(-1))
        editable = state.free & ~masked
        rule = (self.threshold, self.editing_threshold)
        return refine_masks(x, candidates, confidence, masked, editable, quota, *rule)[0]

    def update_uniform(self, state: StepInput, candidates, confidence, noise) -> torch.Tensor:
        """Uniform mode with the step's draws; the committed positions restart at the block's first step."""
        if state.index == 0 or self.committed is None or self.committed.shape != state.x.shape:
            self.committed = ~state.free  # held positions count as committed and are never edited: see below
        n = state.free.sum(-1)  # (B,) the positions this loop writes
        target = (~state.free).sum(-1) + ((state.index + 1) * n + state.steps - 1) // state.steps  # ceil
        x_s, self.committed, _, _ = refine_uniform(
            state.x, candidates, confidence, self.committed, target, self.threshold, self.editing_threshold, noise
        )
        return torch.where(state.free, x_s, state.x_start)  # an edit of a held position is undone here
