"""Two stages in one run: an autoregressive stage, then its adaptation into a diffusion LM (A2D).

``model.adapt=a2d training.ar_share=s`` trains the first ``round(s * training.max_iters)`` steps as an
autoregressive model (the same transformer with causal attention, next-token loss on windows one token
longer, no logit shift) and the rest as the diffusion LM the config describes, starting from the first
stage's weights. That is exactly two runs chained by ``training.init_from`` (``bench/a2d.py`` measures
both ways), folded into one run directory and one log:

- at the switch the sampling (EMA) weights become the weights, as ``training.init_from`` loads them, the
  optimizer's moments and the EMA start afresh, and the objective, window length and attention change;
- each stage has its own learning-rate schedule: ``training.warmup_iters`` of warmup (at most a tenth of
  the stage, as ``bench/a2d.py`` sets it for each of its two runs), then the cosine decay over the stage's
  own steps;
- the stage is a function of the step, and the switch happens inside the last step of the first stage, so
  a checkpoint holds one stage's state only and resuming from any step (the switch included) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokendiff.training.optimizer import clear_moments

__all__ = ["ArStage", "ar_stage_steps"]


def ar_stage_steps(ar_share: float, max_iters: int) -> int:
    """Steps of the autoregressive stage: ``ar_share`` of the run, at least one step of each stage."""
    return min(max(round(ar_share * max_iters), 1), max_iters - 1)


@dataclass
class ArStage:
    """The first stage of an A2D run: ``objective`` (next-token) for steps ``0 .. steps - 1``."""

    objective: object
    steps: int

    def schedule(self, step: int, max_iters: int, warmup_iters: int) -> tuple[int, int, int]:
        """(first step, number of steps, warmup steps) of the stage that ``step`` belongs to: its learning-rate
        schedule, whose warmup is ``training.warmup_iters`` but at most a tenth of the stage."""
        start, steps = (0, self.steps) if step < self.steps else (self.steps, max_iters - self.steps)
        return start, steps, min(warmup_iters, steps // 10)

    def enter(self, trainer, autoregressive: bool) -> None:
        """Set the trainer's objective and window, and every copy of the model, for one of the stages."""
        models = [trainer.raw_model] + ([trainer.ema.module] if trainer.ema is not None else [])
        for model in models:
            model.attention_reach = 0 if autoregressive else None  # 0: causal
            model.logit_shift = False if autoregressive else trainer.adapted_logit_shift
        trainer.objective = self.objective if autoregressive else trainer.diffusion_objective
        trainer.seq_len = trainer.block_size + trainer.objective.extra_tokens
        trainer.in_ar_stage = autoregressive

    @torch.no_grad()
    def switch(self, trainer) -> None:
        """End the autoregressive stage: its sampling weights become the weights of the adaptation, whose
        optimizer moments and EMA start afresh (what ``training.init_from`` of the first stage would do)."""
        if trainer.ema is not None:
            for p, q in zip(trainer.raw_model.parameters(), trainer.ema.module.parameters()):
                p.copy_(q)
            trainer.ema.updates = 0  # the decay warms up again; the average starts at these weights
        clear_moments(trainer.optimizer.optimizer)  # the moments and step counts of the first stage
        self.enter(trainer, autoregressive=False)
