"""The objective interface: what the trainer and the likelihood evaluation call.

An *objective* turns a batch into per-token loss terms. A diffusion objective wraps a kernel
(:class:`tokendiff.processes.Kernel`) and decides how times are drawn and what is scored: clean data
(:class:`~tokendiff.objectives.clean.CleanObjective`), corrupted data taken at face value
(:class:`~tokendiff.objectives.naive.NaiveObjective`) or corrupted data with the ambient losses
(:class:`~tokendiff.objectives.ambient.AmbientObjective`). The autoregressive yardstick is an objective
without a kernel.

Every objective derives from :class:`Objective`, whose optional hooks (training state, the imputing model)
do nothing by default, so that the trainer calls them on any objective without asking whether it has them.
"""

from __future__ import annotations

import torch

from tokendiff.processes.base import Kernel

__all__ = ["Objective"]


class Objective:
    """Base class of the training objectives: :meth:`loss_terms`, and hooks with do-nothing defaults."""

    name: str
    kernel: Kernel | None  # the clean kernel to sample and evaluate with; None: autoregressive
    t_min: float  # training times are drawn from [t_min, 1] (0 for autoregressive)
    extra_tokens: int = 0  # a training window holds block_size + extra_tokens tokens
    # the trainer's evaluation also reports the clean NELBO of the training split: it needs clean training
    # sequences (corrupted ones have no clean NELBO)
    reports_train_nelbo: bool = True

    def loss_terms(
        self, model, x: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0
    ) -> torch.Tensor:
        """Per-token loss terms (B, L) of a batch ``x``; ``model(x, t) -> logits (B, L, V)``.

        ``progress``: share of training done (objectives that change over training use it).
        """
        raise NotImplementedError

    def bind_imputer(self, model) -> None:
        """The model that draws the objective's imputations (the trainer passes its EMA weights); most
        objectives draw none and ignore it."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Training state beyond the weights, saved with a checkpoint (``training_state/objective.safetensors``)
        so that a resumed run continues exactly; none by default."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved; nothing by default."""
