"""The per-step random draws of training: one generator per (seed, step, micro-step, stream[, rank]).

Every random draw of step ``k`` (the batch offsets, the times, the masks) comes from these generators, so
a run stopped at step ``k`` and resumed draws what an uninterrupted run draws (exact resume).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["step_generator"]


def step_generator(seed: int, step: int, micro: int, stream: int, device, rank: int = 0, world: int = 1):
    """A generator for one micro-step's draws: a function of (seed, step, micro, stream[, rank]) only.

    Stream 0 draws the batch (on the CPU, where the token file is), stream 1 the times and masks (on
    the model's device); distinct streams keep the two independent. With several processes the rank
    joins the seed (one process keeps the draws of earlier versions).
    """
    entropy = [seed, step, micro, stream] + ([rank] if world > 1 else [])
    state = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)
